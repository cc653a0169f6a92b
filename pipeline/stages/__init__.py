"""The stage graph, in run order: each stage's function, the config sections its key hashes,
its upstream stages, and the config keys no key hashes (NOT_HASHED). Each stage is
`run(ctx) -> metrics` in its own module, reached through a small function below that imports
it when the stage runs: importing the eleven stage modules (torch, smp, lightgbm) takes
several seconds, which every `--help` and `status` would pay."""

from __future__ import annotations

from pipeline.config import typed, zoo
from pipeline.config.schema import Config
from pipeline.core import paths
from pipeline.engine.cache import Context, Stage
from pipeline.engine.fingerprint import fingerprint
from pipeline.engine.graph import register, register_not_hashed, register_opt_in, register_unhashed

_TRAIN_DATA = (
    "data.train_images",
    "data.train_masks",
    "data.train_rle_csv",
    "data.id_column",
    "data.rle_column",
    "data.metadata",
    "data.mask_threshold",
    "data.channels",
    "data.classes",
    "data.exclusive",
)


def _train_inputs(cfg: Config) -> dict:
    d = cfg.data
    masks = list(d.train_masks.values()) if isinstance(d.train_masks, dict) else [d.train_masks]
    return fingerprint(d.train_images, *masks, d.train_rle_csv, *d.metadata, memo_path=paths.fingerprint_memo(cfg.experiment.artifacts))


def _test_inputs(cfg: Config) -> dict:
    d = cfg.data
    return fingerprint(d.test_images, d.sample_submission, *d.metadata, memo_path=paths.fingerprint_memo(cfg.experiment.artifacts))


def _id_column_extra(cfg: Config) -> dict:
    # The submission's id header follows data.id_column; hashed only when it is not the
    # default, so that existing submit keys stay.
    return {"data.id_column": cfg.data.id_column} if cfg.data.id_column != "id" else {}


def _last_epoch(swa_epochs: int) -> dict:
    # Without SWA the fold model is now the last epoch's, no longer the best-validated one
    # (chosen on the OOF images' labels): hashed only then, so SWA configs keep their keys.
    return {"final_model": "last"} if swa_epochs == 0 else {}


def _seg_head_extra(cfg: Config) -> dict:
    # With classify.source = seg_head the segment stage also trains the empty-mask head.
    head = {"classify.source": cfg.classify.source} if cfg.classify.seg_head else {}
    return head | _last_epoch(cfg.segment.train.swa_epochs)


def _classify_extra(cfg: Config) -> dict:
    return _last_epoch(cfg.classify.train.swa_epochs)


def _ingest_run_train(ctx: Context) -> dict:
    from pipeline.stages import ingest

    return ingest.run_train(ctx)


def _ingest_run_test(ctx: Context) -> dict:
    from pipeline.stages import ingest

    return ingest.run_test(ctx)


def _embed(ctx: Context) -> dict:
    from pipeline.stages import embed

    return embed.run(ctx)


def _mosaic(ctx: Context) -> dict:
    from pipeline.stages import mosaic

    return mosaic.run(ctx)


def _folds(ctx: Context) -> dict:
    from pipeline.stages import folds

    return folds.run(ctx)


def _classify(ctx: Context) -> dict:
    from pipeline.stages import classify

    return classify.run(ctx)


def _segment(ctx: Context) -> dict:
    from pipeline.stages import segment

    return segment.run(ctx)


def _pseudo(ctx: Context) -> dict:
    from pipeline.stages import pseudo

    return pseudo.run(ctx)


def _distill(ctx: Context) -> dict:
    from pipeline.stages import distill

    return distill.run(ctx)


def _ensemble(ctx: Context) -> dict:
    from pipeline.stages import ensemble

    return ensemble.run(ctx)


def _scorer(ctx: Context) -> dict:
    from pipeline.stages import scorer

    return scorer.run(ctx)


def _submit(ctx: Context) -> dict:
    from pipeline.stages import submit

    return submit.run(ctx)


# Options added after artifacts existed, hashed only when on (see graph.OPT_IN).
register_opt_in(
    "folds.mosaic",
    "classify.model.decoder_attention",
    "segment.model.decoder_attention",
    "segment.model.head",
    "pseudo.mean_teacher",
    "pseudo.mean_teacher.final_teacher",
    "pseudo.mean_teacher.mutual",
    "ensemble.adabn",
    "segment.train.sync_bn",
    "classify.train.sync_bn",
    "segment.train.progressive",
    "data.classes",
    "data.exclusive",
    "segment.subclasses",
    "folds.clusters",
    "segment.balance",
    "segment.hard",
    "scorer.knn",
    "scorer.difficulty",
    "segment.context",
    "scorer.edges",
    "pseudo.score_select",
    segment__target="binary",
)
register_unhashed("segment.models", "distill.teachers")
# Keys that change where or how a run computes, not what it computes (or how it is named), so
# that no stage key hashes them; tests/test_stage_keys.py fails on a key that is neither hashed
# nor listed here.
register_not_hashed(
    "experiment.name",  # names the artifact folder
    "experiment.artifacts",  # where the folders live
    "experiment.device",  # cpu or cuda: the same fit up to float rounding
    "experiment.threads",  # CPU threads: speed only
    "experiment.deterministic",  # cuDNN algorithm choice on GPUs: CPU runs are deterministic anyway
    "experiment.compile",  # torch.compile of inference: speed only
    "experiment.batch_tta",  # TTA views in one forward pass: speed only
    "data.max_pixels",  # a guard against decompression bombs, read before decoding
)
register(
    Stage(
        "ingest",
        _TRAIN_DATA,
        (),
        _ingest_run_train,
        inputs=_train_inputs,
        doc="validate the train data and cache decoded arrays",
    )
)
register(
    Stage(
        "ingest_test",
        ("data.test_images", "data.sample_submission", "data.id_column", "data.metadata", "data.channels", "data.classes"),
        ("ingest",),
        _ingest_run_test,
        inputs=_test_inputs,
        doc="validate the test folder and cache decoded arrays",
    )
)
register(
    Stage(
        "embed",
        ("embed",),
        ("ingest", "ingest_test"),
        _embed,
        doc="image embeddings (metric learning + classification constraint), PCA, neighbours, clusters, duplicates",
    )
)


def _mosaic_extra(cfg: Config) -> dict:
    # The ratio as an extra, not a hashed key: segment.context is dropped from keys while off,
    # and scorer.edges reads this stage with context off. An unused search (`all` walks every
    # stage) writes nothing, and its key must not serve a config that reads it.
    return {"ratio": cfg.segment.context.ratio} if zoo.mosaic_used(cfg) else {"unused": True}


register(
    Stage(
        "mosaic",
        (),
        ("ingest", "ingest_test"),
        _mosaic,
        extra=_mosaic_extra,
        doc="touching pairs among train and test tiles; each tile's neighbour per side (segment.context)",
    )
)


def _mosaic_if(cfg: Config, used: bool) -> dict:
    # An upstream only of a model that grows its tiles with context, or of the scorer's edge
    # features (other configs keep their keys).
    return {"mosaic": (cfg, "mosaic")} if used else {}


def _embed_if(cfg: Config, used: bool) -> dict:
    # The embed stage is an upstream of a stage only when that stage reads it (clusters grouping
    # the folds, balance weights, KNN features), so that other configs keep their keys.
    return {"embed": (cfg, "embed")} if used else {}


def _folds_embed(cfg: Config) -> dict:
    return _embed_if(cfg, cfg.folds.clusters)


def _score_select_extra(cfg: Config) -> dict:
    # pseudo.score_select fits the scorer's LightGBM and scores with the submission's metric.
    if not cfg.pseudo.score_select.enabled:
        return {}
    return {"score_select": {"lgbm": cfg.scorer.lgbm, "metric": cfg.submit.metric}}


def _balance_embed(cfg: Config) -> dict:
    return _embed_if(cfg, cfg.segment.balance.on)


def _segment_reads(cfg: Config) -> dict:
    return _balance_embed(cfg) | _mosaic_if(cfg, cfg.segment.context.enabled)


def _ensemble_reads(cfg: Config) -> dict:
    # Test tiles are grown by the mosaic stage's neighbours for each model that trained so.
    # (the first such model's search: the one it trained with)
    subs = (zoo.entry_cfg(cfg, entry) for entry in cfg.ensemble.models)
    grown = next((sub for sub in subs if sub.segment.context.enabled), None)
    return zoo.upstream(cfg) | ({"mosaic": (grown, "mosaic")} if grown is not None else {})


register(
    Stage(
        "folds",
        ("folds",),
        ("ingest",),
        _folds,
        models=_folds_embed,
        doc="stratified (grouped) K folds on coverage bins; optional mosaic or embedding-cluster groups",
    )
)
register(
    Stage(
        "classify",
        ("classify",),
        ("ingest", "folds"),
        _classify,
        extra=_classify_extra,
        folds_key="classify.train.folds",
        doc="empty-mask classifier: OOF probabilities, ROC/AUC",
    )
)
register(
    Stage(
        "segment",
        ("segment",),
        ("ingest", "folds"),
        _segment,
        extra=_seg_head_extra,
        models=_segment_reads,
        folds_key="segment.train.folds",
        doc="U-Net + distance head per fold: OOF probability maps",
    )
)
register(
    Stage(
        "pseudo",
        ("pseudo", "segment"),
        ("ingest", "ingest_test", "folds", "segment", "classify"),
        _pseudo,
        version="2",  # 2: fold k pseudo-labelled by fold k's models alone (no second-order leak)
        models=_balance_embed,
        extra=_score_select_extra,
        folds_key="segment.train.folds",
        doc="pseudo-label confident test images and retrain (optionally with a mean teacher)",
    )
)


def _scorer_reads(cfg: Config) -> dict:
    return _embed_if(cfg, cfg.scorer.knn > 0) | _mosaic_if(cfg, cfg.scorer.edges)


def _distill_teachers(cfg: Config) -> dict:
    if not cfg.distill.enabled:
        return {}
    return zoo.upstream(cfg, zoo.teachers(cfg)) | _balance_embed(zoo.model_cfg(cfg, cfg.distill.student))


def _distill_extra(cfg: Config) -> dict:
    # The student's own section (a zoo model's, merged) and whether it trains the image head.
    if not cfg.distill.enabled:
        return {}
    # The teachers as resolved (an empty list means ensemble.models): a blend that names the
    # student instead of its teachers keeps the student's key.
    student = zoo.model_cfg(cfg, cfg.distill.student)
    section = typed.section(student, "segment")
    # Opt-ins added after the distill stage, dropped when off: students without them keep their keys.
    if not student.segment.balance.on:
        section.pop("balance")
    for name in ("hard", "context"):
        if not getattr(student.segment, name).enabled:
            section.pop(name)
    return {"student": section, "teachers": zoo.teachers(cfg)} | _seg_head_extra(student)


register(
    Stage(
        "distill",
        ("distill", "ensemble.fit_weights", "ensemble.adabn"),
        ("ingest", "ingest_test", "folds", "segment", "pseudo"),
        _distill,
        models=_distill_teachers,
        extra=_distill_extra,
        folds_key="segment.train.folds",
        doc="one student trained on fold k's teachers' soft maps (distillation)",
    )
)
register(
    Stage(
        "ensemble",
        ("ensemble", "segment.train.tta", "classify.train.tta"),
        ("ingest", "ingest_test", "folds", "classify", "segment", "pseudo"),
        _ensemble,
        version="2",  # 2: blend weights of fold k's OOF fitted on the other folds
        models=_ensemble_reads,
        doc="test inference (TTA, fold average) and OOF-fitted blend",
    )
)
register(
    Stage(
        "scorer",
        ("scorer", "submit.metric"),
        ("ingest", "ingest_test", "folds", "ensemble"),
        _scorer,
        # 2: policy none (no post-processing) when nothing beats it; in-sample grid score
        # 3: auto chooses its policy inside the nesting; LightGBM deterministic
        version="3",
        models=_scorer_reads,
        doc="LightGBM LB-score predictor choosing post-processing",
    )
)
register(
    Stage(
        "submit",
        ("submit", "data.solution_masks", "data.sample_submission"),
        ("ingest", "ingest_test", "ensemble", "scorer"),
        _submit,
        extra=_id_column_extra,
        doc="gate, post-process, RLE-encode, validate, write CSV",
    )
)
