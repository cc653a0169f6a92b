"""The classify section: the empty-mask classifier (separate, or a head on the segmentation
encoder) and its patch mode."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.blocks import (
    ClassifyModelCfg,
    ClassifyTrainCfg,
    InputCfg,
)
from pipeline.config.fields import Problems, valid


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
    # bce; weighted_bce: each class's positives weighted by its negatives/positives in the
    # training part (K classes: rare classes count); focal: focal loss, gamma 2
    loss: str = valid("bce", "weighted_bce", "focal")

    @property
    def seg_head(self) -> bool:
        """Whether the empty-mask classifier rides on the segmentation encoder (trained by the
        segment stage) instead of being a network of its own."""
        return self.enabled and self.source == "seg_head"
