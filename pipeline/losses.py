"""Loss registry (plain dict of factories) and the epoch-phased weighted combination.

The segmentation losses come from smp; the schedule lets a config say e.g. BCE+Dice for the
first epochs, then Lovász hinge (the TGS recipe: Lovász optimises IoU directly but is
unstable from a random start)."""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.schema import LossPhase

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "bce": lambda: nn.BCEWithLogitsLoss(),
    "dice": lambda: smp.losses.DiceLoss("binary", from_logits=True),
    "lovasz": lambda: smp.losses.LovaszLoss("binary", per_image=True, from_logits=True),
    "focal": lambda: smp.losses.FocalLoss("binary"),
    "jaccard": lambda: smp.losses.JaccardLoss("binary", from_logits=True),
    "tversky": lambda: smp.losses.TverskyLoss("binary", from_logits=True, alpha=0.3, beta=0.7),
}


def get_loss(name: str) -> nn.Module:
    """A loss module by registry name; an unknown name lists the valid ones."""
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]()


class ScheduledLoss(nn.Module):
    """Weighted sum of registry losses, with the weights chosen by epoch phase."""

    def __init__(self, phases: list[LossPhase]) -> None:
        super().__init__()
        self.phases = phases
        names = sorted({n for ph in phases for n in ph.terms})
        self.terms = nn.ModuleDict({n: get_loss(n) for n in names})

    def phase(self, epoch: int) -> LossPhase:
        for ph in self.phases:
            if ph.until_epoch == 0 or epoch < ph.until_epoch:
                return ph
        return self.phases[-1]

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {}
        total = logits.new_zeros(())
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
