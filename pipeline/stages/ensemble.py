"""Ensemble stage: test inference for every model listed in config (each model's fold maps
averaged, with TTA), blend weights fitted on OOF under nested CV (pipeline/inference/blend.py), and the
blended OOF and test maps (plus the distance maps and classifier probabilities) that the scorer
and the submission read."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.core import fileio
from pipeline.core.store import ArrayStore, map_of
from pipeline.data.classrows import cls_frame, flat, repeat, row_probs, stack
from pipeline.data.tables import fold_model_paths
from pipeline.engine.cache import Context
from pipeline.evaluation.oof import paired, score_probs
from pipeline.inference.blend import NestedBlend, nested_blend
from pipeline.inference.contract import fitted_models
from pipeline.inference.ensemble import ensemble_test
from pipeline.inference.ensemble_io import common_ids, model_folders, read_maps
from pipeline.inference.fold_models import classifier_paths
from pipeline.inference.predict import save_maps
from pipeline.neighbours.mosaic_context import Mosaic
from pipeline.postprocessing.readout import readout_image
from pipeline.training.classifier import load_oof
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)


def model_dirs(ctx: Context) -> dict[str, Path]:
    """Folder holding fold models and an 'oof' store, for each model named in config."""
    return model_folders(ctx.cfg.ensemble.models, ctx.upstream)


def load_maps(folder: Path, name: str, ids: list[str]) -> list[np.ndarray]:
    maps = read_maps(folder, name, ids)
    if maps is None:
        raise FileNotFoundError(f"no '{name}' maps in {folder}")
    return maps


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"])
    test_images = ArrayStore(ctx.upstream["ingest_test"], "test_images")
    dirs = model_dirs(ctx)
    ids = common_ids(dirs, data.images.ids)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    # The first model named leads: the blend's distance maps and head probabilities, OOF and
    # test alike, are its.
    lead = dirs[cfg.ensemble.models[0]]
    oof_cls = row_probs(load_oof(lead if cfg.classify.seg_head else ctx.upstream["classify"]), ids, cfg.data.classes)
    nb, per_model = _blend_oof(ctx, data, dirs, (ids, oof_cls))
    models = fitted_models(cfg, dirs)
    logger.info(f"ensemble: test inference with {', '.join(models)}")
    cls_paths = [] if cfg.classify.seg_head else classifier_paths(fold_model_paths(ctx.upstream["classify"]))
    mosaic = Mosaic.open(ctx.upstream["mosaic"], test_images, data.images) if "mosaic" in ctx.upstream else None
    test = ensemble_test(cfg, models, nb.test_weights, cls_paths, test_images, mosaic)
    save_maps(ctx.dir, "test", test_images.ids, test.masks)
    if test.dists is not None:
        save_maps(ctx.dir, "test_dist", test_images.ids, test.dists)
    _write_cls(ctx, (ids, oof_cls), test_images.ids, test.cls)
    return {
        "models": list(dirs),
        "weights": [round(float(w), 3) for w in nb.test_weights],
        "fold_weights": {f"fold{k}": [round(float(x), 3) for x in w] for k, w in nb.fold_weights.items()},
        "oof_tgs_per_model": {name: round(float(v.mean()), 4) for name, v in per_model.items()},
        "oof_tgs": round(float(nb.scores.mean()), 4),
        "n_test": len(test_images),
    } | _blend_gain(per_model, nb.scores)


def _blend_oof(ctx: Context, data: TrainSet, dirs: dict[str, Path], oof: tuple[list[str], np.ndarray]) -> tuple[NestedBlend, dict]:
    """The nested blend of the models' OOF maps (scored and blended per row: an image, or an
    (image, class) pair), written image by image, read out as ensemble.readout says with the
    classifier's probabilities (`oof`: ids, a probability per row); the lead model's distance
    maps copied beside them. Returns the blend (its maps dropped) and each model's row scores.
    Its maps are freed on return: with K classes of large images each copy is gigabytes, and
    test inference comes next."""
    ids, cls = oof
    truths = data.truths_of(ids)
    oofs = {name: flat(load_maps(d, "oof", ids)) for name, d in dirs.items()}
    per_model = {name: score_probs(truths, m) for name, m in oofs.items()}
    fold_of = data.fold_of()
    nb = nested_blend(list(oofs.values()), truths, repeat([fold_of[i] for i in ids], data.k), ctx.cfg.ensemble.fit_weights)
    del oofs, truths
    rows, k, mode = nb.oof, data.k, ctx.cfg.ensemble.readout
    cls_rows = np.asarray(cls, dtype=float).reshape(len(ids), -1)

    def images():
        for i in range(len(ids)):
            image = stack(rows[i * k : (i + 1) * k], k)[0]
            rows[i * k : (i + 1) * k] = [None] * k  # each row freed once written
            yield readout_image(mode, image, cls_rows[i])

    save_maps(ctx.dir, "oof", ids, images())
    lead = dirs[ctx.cfg.ensemble.models[0]]
    if (lead / "oof_dist.index.csv").exists():
        dist = ArrayStore(lead, "oof_dist")
        save_maps(ctx.dir, "oof_dist", ids, (map_of(dist.get(i)) for i in ids))
    nb.oof = []
    return nb, per_model


def _blend_gain(per_model: dict[str, np.ndarray], blended: np.ndarray) -> dict:
    """What the nested blend adds over its best single model, paired on the same rows."""
    if len(per_model) < 2:
        return {}
    best = max(per_model, key=lambda name: per_model[name].mean())
    mean, se = paired(blended - per_model[best])
    return {"blend_gain": {"over": best, "mean": round(mean, 4), "se": round(se, 4)}}


def _write_cls(ctx: Context, oof: tuple[list[str], np.ndarray], test_ids: list[str], test_prob: np.ndarray) -> None:
    """Classifier probabilities for the blended OOF ids (`oof`: ids, a prob per row) and the test
    ids (NaN = no classifier), from the classify stage or, with classify.source = seg_head,
    from the lead model's head."""
    classes = ctx.cfg.data.classes
    fileio.write_csv(ctx.dir / "oof_cls.csv", cls_frame(oof[0], oof[1], classes))
    fileio.write_csv(ctx.dir / "test_cls.csv", cls_frame(test_ids, test_prob, classes))
