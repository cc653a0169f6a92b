"""The pipeline's stage graph, `GRAPH`, in run order: each stage's function, the config sections
its key hashes, its upstream stages, and the config keys hashed only when on or never. The entry
points hand it to the engine (`cache.run_stage(GRAPH, cfg, name)`). Each stage is
`run(ctx) -> metrics` in its own module, reached through a small function below that imports
it when the stage runs: importing the eleven stage modules (torch, smp, lightgbm) takes
several seconds, which every `--help` and `status` would pay."""

from __future__ import annotations

from pipeline.engine.cache import Context, Stage
from pipeline.engine.graph import Graph
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


GRAPH = Graph(
    stages={
        s.name: s
        for s in (
            Stage(
                "ingest",
                TRAIN_DATA,
                (),
                _ingest_run_train,
                inputs=train_inputs,
                doc="validate the train data and cache decoded arrays",
            ),
            Stage(
                "ingest_test",
                ("data.test_images", "data.sample_submission", "data.id_column", "data.metadata", "data.channels", "data.classes"),
                ("ingest",),
                _ingest_run_test,
                inputs=test_inputs,
                doc="validate the test folder and cache decoded arrays",
            ),
            Stage(
                "embed",
                ("embed",),
                ("ingest", "ingest_test"),
                _embed,
                doc="image embeddings (metric learning + classification constraint), PCA, neighbours, clusters, duplicates",
            ),
            Stage(
                "mosaic",
                (),
                ("ingest", "ingest_test"),
                _mosaic,
                extra=mosaic_extra,
                doc="touching pairs among train and test tiles; each tile's neighbour per side (segment.context)",
            ),
            Stage(
                "folds",
                ("folds",),
                ("ingest",),
                _folds,
                models=folds_embed,
                doc="stratified (grouped) K folds on coverage bins; optional mosaic or embedding-cluster groups",
            ),
            Stage(
                "classify",
                ("classify",),
                ("ingest", "folds"),
                _classify,
                extra=classify_extra,
                folds_key="classify.train.folds",
                doc="empty-mask classifier: OOF probabilities, ROC/AUC",
            ),
            Stage(
                "segment",
                ("segment",),
                ("ingest", "folds"),
                _segment,
                extra=seg_head_extra,
                models=segment_reads,
                folds_key="segment.train.folds",
                doc="U-Net + distance head per fold: OOF probability maps",
            ),
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
            ),
            Stage(
                "distill",
                ("distill", "ensemble.fit_weights", "ensemble.adabn"),
                ("ingest", "ingest_test", "folds", "segment", "pseudo"),
                _distill,
                models=distill_teachers,
                extra=distill_extra,
                folds_key="segment.train.folds",
                doc="one student trained on fold k's teachers' soft maps (distillation)",
            ),
            Stage(
                "ensemble",
                ("ensemble", "segment.train.tta", "classify.train.tta"),
                ("ingest", "ingest_test", "folds", "classify", "segment", "pseudo"),
                _ensemble,
                version="2",  # 2: blend weights of fold k's OOF fitted on the other folds
                models=ensemble_reads,
                doc="test inference (TTA, fold average) and OOF-fitted blend",
            ),
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
            ),
            Stage(
                "submit",
                ("submit", "data.solution_masks", "data.sample_submission"),
                ("ingest", "ingest_test", "ensemble", "scorer"),
                _submit,
                extra=id_column_extra,
                doc="gate, post-process, RLE-encode, validate, write CSV",
            ),
        )
    },
    # Options added after artifacts existed, hashed only when on (see Graph.opt_in).
    opt_in={
        "folds.mosaic": None,
        "classify.model.decoder_attention": None,
        "segment.model.decoder_attention": None,
        "segment.model.head": None,
        "pseudo.mean_teacher": None,
        "pseudo.mean_teacher.final_teacher": None,
        "pseudo.mean_teacher.mutual": None,
        "ensemble.adabn": None,
        "segment.train.sync_bn": None,
        "classify.train.sync_bn": None,
        "segment.train.progressive": None,
        "data.classes": None,
        "data.exclusive": None,
        "data.mask_invert": None,
        "segment.subclasses": None,
        "folds.clusters": None,
        "folds.duplicates": None,
        "segment.balance": None,
        "segment.hard": None,
        "scorer.knn": None,
        "scorer.difficulty": None,
        "segment.context": None,
        "scorer.edges": None,
        "pseudo.score_select": None,
        "segment.target": "binary",
        "folds.stratify": "coverage",
        "classify.loss": "bce",
        "ensemble.readout": "classes",
    },
    unhashed=frozenset({"segment.models", "distill.teachers"}),
    # Keys that change where or how a run computes, not what it computes (or how it is named), so
    # that no stage key hashes them; tests/test_stage_keys.py fails on a key that is neither hashed
    # nor listed here.
    not_hashed=frozenset(
        {
            "experiment.name",  # names the artifact folder
            "experiment.artifacts",  # where the folders live
            "experiment.device",  # cpu or cuda: the same fit up to float rounding
            "experiment.threads",  # CPU threads: speed only
            "experiment.deterministic",  # cuDNN algorithm choice on GPUs: CPU runs are deterministic anyway
            "experiment.compile",  # torch.compile of inference: speed only
            "experiment.batch_tta",  # TTA views in one forward pass: speed only
            "data.max_pixels",  # a guard against decompression bombs, read before decoding
            "experiment.tracking",  # logs a finished stage's results elsewhere: changes nothing it computes
            "experiment.tracking_uri",  # where they are logged
        }
    ),
)
