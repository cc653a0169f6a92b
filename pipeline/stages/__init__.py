"""The stage graph, in run order: each stage's function, the config sections its key hashes,
its upstream stages, and the config keys no key hashes (NOT_HASHED). Each stage is
`run(ctx) -> metrics` in its own module, reached through a small function below that imports
it when the stage runs: importing the eleven stage modules (torch, smp, lightgbm) takes
several seconds, which every `--help` and `status` would pay."""

from __future__ import annotations

from pipeline.engine.cache import Context, Stage
from pipeline.engine.graph import register, register_not_hashed, register_opt_in, register_unhashed
from pipeline.stages.reads import (
    TRAIN_DATA,
    balance_embed,
    classify_extra,
    distill_extra,
    distill_teachers,
    ensemble_reads,
    folds_embed,
    id_column_extra,
    mosaic_extra,
    score_select_extra,
    scorer_reads,
    seg_head_extra,
    segment_reads,
    test_inputs,
    train_inputs,
)


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
    folds__stratify="coverage",
    classify__loss="bce",
    ensemble__readout="classes",
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
        TRAIN_DATA,
        (),
        _ingest_run_train,
        inputs=train_inputs,
        doc="validate the train data and cache decoded arrays",
    )
)
register(
    Stage(
        "ingest_test",
        ("data.test_images", "data.sample_submission", "data.id_column", "data.metadata", "data.channels", "data.classes"),
        ("ingest",),
        _ingest_run_test,
        inputs=test_inputs,
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


register(
    Stage(
        "mosaic",
        (),
        ("ingest", "ingest_test"),
        _mosaic,
        extra=mosaic_extra,
        doc="touching pairs among train and test tiles; each tile's neighbour per side (segment.context)",
    )
)


register(
    Stage(
        "folds",
        ("folds",),
        ("ingest",),
        _folds,
        models=folds_embed,
        doc="stratified (grouped) K folds on coverage bins; optional mosaic or embedding-cluster groups",
    )
)
register(
    Stage(
        "classify",
        ("classify",),
        ("ingest", "folds"),
        _classify,
        extra=classify_extra,
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
        extra=seg_head_extra,
        models=segment_reads,
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
        models=balance_embed,
        extra=score_select_extra,
        folds_key="segment.train.folds",
        doc="pseudo-label confident test images and retrain (optionally with a mean teacher)",
    )
)


register(
    Stage(
        "distill",
        ("distill", "ensemble.fit_weights", "ensemble.adabn"),
        ("ingest", "ingest_test", "folds", "segment", "pseudo"),
        _distill,
        models=distill_teachers,
        extra=distill_extra,
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
        models=ensemble_reads,
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
        models=scorer_reads,
        doc="LightGBM LB-score predictor choosing post-processing",
    )
)
register(
    Stage(
        "submit",
        ("submit", "data.solution_masks", "data.sample_submission"),
        ("ingest", "ingest_test", "ensemble", "scorer"),
        _submit,
        extra=id_column_extra,
        doc="gate, post-process, RLE-encode, validate, write CSV",
    )
)
