"""The segment section: the segmentation model, its training and its options (auxiliary head,
sub-classes, balance, the hard round, mosaic context, more models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import fields
from pipeline.config.blocks import (
    InputCfg,
    ModelCfg,
    TrainCfg,
)
from pipeline.config.fields import Problems, valid


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

    clusters: float = valid(min=0, max=2)  # cluster size ** -clusters: 1 draws every cluster equally often
    test_likeness: float = valid(min=0, max=2)  # test-likeness odds ** test_likeness: 1 = the density ratio

    @property
    def on(self) -> bool:
        return bool(self.clusters or self.test_likeness)


@dataclass
class HardCfg:
    """A second training round that draws hard training images more often (pipeline/training/hard.py)."""

    enabled: bool
    epochs: int = valid(min=1)
    strength: float = valid(min=0)  # weight x (1 + strength x (1 - in-sample score))


@dataclass
class ContextCfg:
    """Mosaic context (pipeline/neighbours/mosaic_context.py): tiles grown by their touching neighbours' pixels."""

    enabled: bool
    margin: int = valid(min=1)  # px added on every side (neighbours' pixels where known, else reflection)
    ratio: float = valid(above=0, max=1)  # the pair search's ratio test (as folds.mosaic.margin)


@dataclass
class SegmentCfg:
    model: ModelCfg
    input: InputCfg
    train: TrainCfg
    aux: AuxCfg
    # binary: one sigmoid; multilabel: one sigmoid per class of data.classes (classes may
    # overlap); multiclass: softmax over background + the classes (exclusive classes)
    target: str = valid(*fields.TARGETS)
    subclasses: SubclassesCfg | None  # binary target only
    balance: BalanceCfg
    hard: HardCfg
    context: ContextCfg
    # More models: {name: the segment keys where it differs}; see pipeline/config/zoo.py.
    models: dict[str, dict[str, Any]]

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
