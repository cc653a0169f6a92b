"""What each stage's key reads beyond its hashed sections: the input files' fingerprints,
values read only in some settings (extras, hashed only when non-empty so that the usual
setting keeps its key), and the stages of other configs it reads (zoo models, the embed and
mosaic stages when a switch reads them). The stage table (pipeline/stages/__init__.py) names
these functions."""

from __future__ import annotations

from pipeline.config import typed, zoo
from pipeline.config.schema import Config
from pipeline.core import paths
from pipeline.engine.fingerprint import fingerprint

TRAIN_DATA = (
    "data.train_images",
    "data.train_masks",
    "data.train_rle_csv",
    "data.id_column",
    "data.rle_column",
    "data.metadata",
    "data.mask_threshold",
    "data.mask_invert",
    "data.channels",
    "data.classes",
    "data.exclusive",
)


def train_inputs(cfg: Config) -> dict:
    d = cfg.data
    masks = list(d.train_masks.values()) if isinstance(d.train_masks, dict) else [d.train_masks]
    return fingerprint(d.train_images, *masks, d.train_rle_csv, *d.metadata, memo_path=paths.fingerprint_memo(cfg.experiment.artifacts))


def test_inputs(cfg: Config) -> dict:
    d = cfg.data
    return fingerprint(d.test_images, d.sample_submission, *d.metadata, memo_path=paths.fingerprint_memo(cfg.experiment.artifacts))


def id_column_extra(cfg: Config) -> dict:
    # The submission's id header follows data.id_column; hashed only when it is not the
    # default, so that existing submit keys stay.
    return {"data.id_column": cfg.data.id_column} if cfg.data.id_column != "id" else {}


def last_epoch(swa_epochs: int) -> dict:
    # Without SWA the fold model is now the last epoch's, no longer the best-validated one
    # (chosen on the OOF images' labels): hashed only then, so SWA configs keep their keys.
    return {"final_model": "last"} if swa_epochs == 0 else {}


def seg_head_extra(cfg: Config) -> dict:
    # With classify.source = seg_head the segment stage also trains the empty-mask head.
    head = {"classify.source": cfg.classify.source} if cfg.classify.seg_head else {}
    return head | last_epoch(cfg.segment.train.swa_epochs)


def classify_extra(cfg: Config) -> dict:
    return last_epoch(cfg.classify.train.swa_epochs)


def mosaic_extra(cfg: Config) -> dict:
    # The ratio as an extra, not a hashed key: segment.context is dropped from keys while off,
    # and scorer.edges reads this stage with context off. An unused search (`all` walks every
    # stage) writes nothing, and its key must not serve a config that reads it.
    return {"ratio": cfg.segment.context.ratio} if zoo.mosaic_used(cfg) else {"unused": True}


def mosaic_if(cfg: Config, used: bool) -> dict:
    # An upstream only of a model that grows its tiles with context, or of the scorer's edge
    # features (other configs keep their keys).
    return {"mosaic": (cfg, "mosaic")} if used else {}


def embed_if(cfg: Config, used: bool) -> dict:
    # The embed stage is an upstream of a stage only when that stage reads it (clusters grouping
    # the folds, balance weights, KNN features), so that other configs keep their keys.
    return {"embed": (cfg, "embed")} if used else {}


def folds_embed(cfg: Config) -> dict:
    return embed_if(cfg, cfg.folds.clusters)


def score_select_extra(cfg: Config) -> dict:
    # pseudo.score_select fits the scorer's LightGBM and scores with the submission's metric.
    if not cfg.pseudo.score_select.enabled:
        return {}
    return {"score_select": {"lgbm": cfg.scorer.lgbm, "metric": cfg.submit.metric}}


def balance_embed(cfg: Config) -> dict:
    return embed_if(cfg, cfg.segment.balance.on)


def segment_reads(cfg: Config) -> dict:
    return balance_embed(cfg) | mosaic_if(cfg, cfg.segment.context.enabled)


def ensemble_reads(cfg: Config) -> dict:
    # Test tiles are grown by the mosaic stage's neighbours for each model that trained so.
    # (the first such model's search: the one it trained with)
    subs = (zoo.entry_cfg(cfg, entry) for entry in cfg.ensemble.models)
    grown = next((sub for sub in subs if sub.segment.context.enabled), None)
    return zoo.upstream(cfg) | ({"mosaic": (grown, "mosaic")} if grown is not None else {})


def scorer_reads(cfg: Config) -> dict:
    return embed_if(cfg, cfg.scorer.knn > 0) | mosaic_if(cfg, cfg.scorer.edges)


def distill_teachers(cfg: Config) -> dict:
    if not cfg.distill.enabled:
        return {}
    return zoo.upstream(cfg, zoo.teachers(cfg)) | balance_embed(zoo.model_cfg(cfg, cfg.distill.student))


def distill_extra(cfg: Config) -> dict:
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
    return {"student": section, "teachers": zoo.teachers(cfg)} | seg_head_extra(student)
