"""Loss registry (plain dict of factories) and the epoch-phased weighted combination.

The segmentation losses come from smp; the schedule lets a config say e.g. BCE+Dice for the
first epochs, then Lovász hinge (the TGS recipe: Lovász optimises IoU directly but is
unstable from a random start)."""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from pipeline.config.blocks import LossPhase
from pipeline.core.errors import UserError

# Each factory takes smp's mode: binary (one sigmoid), multilabel (a sigmoid per class) or
# multiclass (softmax over background + classes; its target is a class-index map, made by
# ScheduledLoss). Lovász in multiclass mode is Lovász-Softmax (Berman et al.; Rakhlin et al.
# used it on DeepGlobe 2018).
# bce and ce name one term, the cross-entropy of the target's own activation: binary
# cross-entropy per sigmoid, categorical over a softmax (of which BCE is the two-class case),
# so that one recipe serves every target.
LOSSES: dict[str, Callable[[str], nn.Module]] = {
    "bce": lambda mode: nn.CrossEntropyLoss() if mode == "multiclass" else nn.BCEWithLogitsLoss(),
    "ce": lambda mode: nn.CrossEntropyLoss() if mode == "multiclass" else nn.BCEWithLogitsLoss(),
    "dice": lambda mode: smp.losses.DiceLoss(mode, from_logits=True),
    "lovasz": lambda mode: smp.losses.LovaszLoss(mode, per_image=True, from_logits=True),
    "focal": lambda mode: smp.losses.FocalLoss(mode),
    "jaccard": lambda mode: smp.losses.JaccardLoss(mode, from_logits=True),
    "tversky": lambda mode: smp.losses.TverskyLoss(mode, from_logits=True, alpha=0.3, beta=0.7),
}


def get_loss(name: str, mode: str = "binary") -> nn.Module:
    """A loss module by registry name for smp's `mode`; an unknown name lists the valid ones."""
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](mode)


def class_index(target: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) 0/1 planes of exclusive classes -> (B, H, W) class indices, 0 = background."""
    weights = torch.arange(1, target.shape[1] + 1, device=target.device, dtype=target.dtype)
    return (target * weights[None, :, None, None]).sum(1).round().long()


class ScheduledLoss(nn.Module):
    """Weighted sum of registry losses, with the weights chosen by epoch phase."""

    def __init__(self, phases: list[LossPhase], mode: str = "binary") -> None:
        super().__init__()
        self.phases, self.mode = phases, mode
        names = sorted({n for ph in phases for n in ph.terms})
        self.terms = nn.ModuleDict({n: get_loss(n, mode) for n in names})

    def phase(self, epoch: int) -> LossPhase:
        for ph in self.phases:
            if ph.until_epoch == 0 or epoch < ph.until_epoch:
                return ph
        return self.phases[-1]

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {}
        total = logits.new_zeros(())
        if self.mode == "multiclass":
            target = class_index(target)
        for name, weight in self.phase(epoch).terms.items():
            if weight == 0:
                continue
            value = self.terms[name](logits, target)
            parts[name] = float(value.detach())
            total = total + weight * value
        return total, parts


def distance_loss(pred: torch.Tensor, target: torch.Tensor, signed: bool) -> torch.Tensor:
    """Regression of the normalised distance map; the head's raw output is squashed to its range."""
    squashed = torch.tanh(pred) if signed else torch.sigmoid(pred)
    return nn.functional.smooth_l1_loss(squashed, target, beta=0.1)
