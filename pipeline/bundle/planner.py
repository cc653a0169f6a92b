"""Time-budget planner for a code competition's inference: which models, how many fold models
each and which TTA views to run on the test set within a time limit.

Speed is measured on this machine: seconds per test image for each model and view, on a
sample of the test images, after a warm-up batch. Quality is the OOF score of the choice,
computed from OOF maps predicted again view by view by each fold's own model (every model and
view has them; a view never scores images its model trained on), the models blended with
fold-nested weights as the ensemble stage blends them, at threshold 0.5 before any
post-processing (K classes: over (image, class) rows, before ensemble.readout). OOF cannot tell what averaging more fold models buys on the test set (each
OOF image has one model), so the fold count only costs time, and among equal scores the plan
takes the most folds that fit."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config.schema import Config
from pipeline.core.durations import parse_duration
from pipeline.core.errors import UserError
from pipeline.core.runtime import pick_device
from pipeline.core.store import ArrayStore, dequantise, quantise
from pipeline.data.classrows import flat, repeat, truth_planes
from pipeline.data.tables import fold_of, load_folds
from pipeline.evaluation.oof import paired
from pipeline.inference.blend import blend, nested_blend
from pipeline.inference.contract import FittedModel
from pipeline.inference.ensemble_io import common_ids
from pipeline.inference.fold_models import cls_infer_spec, cls_network, load_fold
from pipeline.inference.predict import FLIPS, adapt_bn, predict
from pipeline.neighbours.mosaic_context import Mosaic, for_model

VIEWS = tuple(FLIPS)  # none, hflip, vflip
TIMING_SAMPLE = 64


def parse_budget(text: str) -> float:
    """Seconds from '2h', '90m', '45s', '1h30m' or a plain number of seconds."""
    return parse_duration(text, "plan --budget")


@dataclasses.dataclass
class Measured:
    """Per model: OOF maps per view (ids, truths, folds shared) and test seconds per image per view;
    truths are rows (an image, or an (image, class) pair), folds are per image."""

    ids: list[str]
    truths: list[np.ndarray]
    fold: np.ndarray
    oof: dict[str, dict[str, list[np.ndarray]]]  # model -> view -> maps (quantised as stored)
    seconds: dict[str, dict[str, float]]  # model -> view -> seconds per image and fold model
    adabn_seconds: dict[str, float]  # model -> seconds per image of one AdaBN pass
    n_folds: dict[str, int]
    fixed_seconds: float = 0.0  # per test image, whatever the choice: the separate classifier's folds


def _spec(model: FittedModel, view: str, device: torch.device):
    # One view per pass (batch_tta off) so that each view has its own time; eager (compile off):
    # compiling costs seconds per fold model and call, which a 64-image sample would inflate.
    return dataclasses.replace(model.spec(device, [view]), batch_tta=False, compile=False)


def _model(model: FittedModel, path: Path, channels: int) -> torch.nn.Module:
    return load_fold(model.network(channels), path)


def _oof_views(fitted: FittedModel, images, pos: np.ndarray, fold: np.ndarray, device) -> dict[str, list[np.ndarray]]:
    """OOF maps of each view: fold k's images (at store positions `pos`, as the model sees them)
    predicted by fold k's model alone."""
    out: dict[str, list[np.ndarray | None]] = {v: [None] * len(pos) for v in VIEWS}
    for path in fitted.folds:
        k = fold_of(path)
        rows = np.flatnonzero(fold == k)
        model = _model(fitted, path, images[0].shape[2])
        for view in VIEWS:
            for r, (_, o) in zip(rows, predict(model, images, pos[rows], _spec(fitted, view, device)), strict=True):
                out[view][r] = dequantise(quantise(o["mask"]))
    return out  # type: ignore[return-value]


def _seconds(fn, n: int) -> float:
    fn(min(n, 8))  # warm-up: first-call allocations and thread start
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n


def _timings(fitted: FittedModel, test, device) -> tuple[dict[str, float], float]:
    model = _model(fitted, fitted.folds[0], test[0].shape[2])
    n = min(TIMING_SAMPLE, len(test))
    per_view = {v: _seconds(lambda m, v=v: list(predict(model, test, np.arange(m), _spec(fitted, v, device))), n) for v in VIEWS}
    geometry = _spec(fitted, "none", device).geometry
    overlap = fitted.cfg.segment.input.tile_overlap
    adabn = _seconds(lambda m: adapt_bn(model, FirstImages(test, m), geometry, device, overlap), n)
    return per_view, adabn


class FirstImages:
    """The first `n` images of a store, as a store (a timing sample)."""

    def __init__(self, store: ArrayStore, n: int) -> None:
        self.store, self.n = store, min(n, len(store))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store[range(self.n)[i]]


def _classifier_seconds(cfg: Config, paths: list[Path], test: ArrayStore, device) -> float:
    """Seconds per test image of all classifier folds with their TTA (and AdaBN when on)."""
    if not paths:
        return 0.0
    model = load_fold(cls_network(cfg, test[0].shape[2]), paths[0])
    spec = cls_infer_spec(cfg.classify, device, list(cfg.classify.train.tta))
    n = min(TIMING_SAMPLE, len(test))
    per_fold = _seconds(lambda m: list(predict(model, test, np.arange(m), spec)), n)
    if cfg.ensemble.adabn:
        per_fold += _seconds(lambda m: adapt_bn(model, FirstImages(test, m), spec.geometry, device, spec.overlap), n)
    return per_fold * len(paths)


def measure(
    cfg: Config,
    models: dict[str, FittedModel],
    data: tuple[Path, Path],
    test: ArrayStore,
    classifier: list[Path],
    mosaic: Mosaic | None = None,
) -> Measured:
    """OOF maps per view and test speed per view for each fitted model (`data`: the ingest and
    folds stage folders; a model with context sees tiles grown by `mosaic`'s neighbours); the
    classifier's folds (`classifier`, empty when it rides on the segmentation encoder) are timed
    as a fixed cost."""
    ingest, folds = data
    device = pick_device(cfg.experiment)
    images, masks = ArrayStore(ingest, "images"), ArrayStore(ingest, "masks")
    ids = common_ids({name: m.oof for name, m in models.items()}, images.ids)
    fold_of = load_folds(folds).set_index("id")["fold"]
    fold = fold_of.loc[ids].to_numpy()
    truths = [t for i in ids for t in truth_planes(masks.get(i), cfg.data.n_classes)]  # a row per image, or (image, class)
    oof, seconds, adabn, n_folds = {}, {}, {}, {}
    pos = np.array([images.position(i) for i in ids])
    for name, model in models.items():
        oof[name] = _oof_views(model, for_model(images, model.cfg.segment, mosaic), pos, fold, device)
        seconds[name], adabn[name] = _timings(model, for_model(test, model.cfg.segment, mosaic), device)
        n_folds[name] = len(model.folds)
    return Measured(ids, truths, fold, oof, seconds, adabn, n_folds, _classifier_seconds(cfg, classifier, test, device))


def table(m: Measured, n_test: int, adabn: bool, configured: list[str], fit_weights: bool = True) -> pd.DataFrame:
    """Every (models, views, folds per model) choice: expected test seconds, OOF score, and its
    paired difference from the configured choice (all models, `configured` views) with the
    standard error of that difference over the OOF images."""
    names, rows, scores = list(m.oof), [], {}
    per_row = repeat(m.fold, len(m.truths) // len(m.ids))  # K classes: each image's class rows share its fold
    for k in range(1, len(names) + 1):
        for chosen in itertools.combinations(names, k):
            for r in range(1, len(VIEWS) + 1):
                for views in itertools.combinations(VIEWS, r):
                    maps = [flat(blend([m.oof[n][v] for v in views], np.full(len(views), 1 / len(views)))) for n in chosen]
                    scores[(chosen, views)] = nested_blend(maps, m.truths, per_row, fit_weights).scores
    ref = scores[(tuple(names), tuple(v for v in VIEWS if v in (configured or ["none"])))]  # no views = the plain view
    for (chosen, views), per_image in scores.items():
        diff = per_image - ref
        for f in range(1, min(m.n_folds[n] for n in chosen) + 1):
            per_fold = sum(sum(m.seconds[n][v] for v in views) + (m.adabn_seconds[n] if adabn else 0.0) for n in chosen)
            row = {"models": "+".join(chosen), "views": "+".join(views), "folds": f, "seconds": (f * per_fold + m.fixed_seconds) * n_test}
            mean, se = paired(diff)
            row |= {"oof": float(per_image.mean()), "vs_config": mean, "se": se}
            rows.append(row)
    return pd.DataFrame(rows)


def choose(plans: pd.DataFrame, budget: float) -> pd.Series:
    """The best OOF within the budget; then more folds, then less time."""
    fits = plans[plans["seconds"] <= budget]
    if fits.empty:
        fastest = plans.loc[plans["seconds"].idxmin()]
        raise UserError(
            f"plan: nothing fits {budget:.0f} s; the fastest choice ({fastest['models']}, {fastest['views']}, 1 fold) needs {fastest['seconds']:.0f} s"
        )
    return fits.sort_values(["oof", "folds", "seconds"], ascending=[False, False, True]).iloc[0]


def apply_to_plan(plan: dict, pick: pd.Series, weights: dict[str, float], views: list[str], info: dict) -> dict:
    """A bundle plan restricted to the chosen models (with `weights`), first fold models and `views`."""
    chosen = pick["models"].split("+")
    # each entry keeps what else it holds (its segment section: the model contract)
    models = {n: {**plan["models"][n], "weight": weights[n], "folds": plan["models"][n]["folds"][: int(pick["folds"])]} for n in chosen}
    return {**plan, "models": models, "tta": views, "planner": info}
