"""The model contract: one fitted segmentation model of an ensemble, whatever trained it (the
segment stage, a zoo member, a pseudo round, the distilled student), described by one object
that the ensemble stage, the planner, the bundle and its export read, and nothing else.

It holds the config that rebuilds the network and its inference (the experiment's, with this
model's own segment section: architecture, input geometry, TTA, context, classes and heads),
the fold weight files in fold order, and where its OOF maps are. In a bundle it is written as
the model's `segment` section beside its weight files and read back by `from_plan`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.config import typed, zoo
from pipeline.config.schema import Config
from pipeline.config.segment import ContextCfg, SegmentCfg
from pipeline.data.tables import fold_model_paths, fold_of
from pipeline.inference.fold_models import seg_infer_spec, seg_network
from pipeline.inference.predict import InferSpec


@dataclass(frozen=True)
class FittedModel:
    """One model of `ensemble.models`: its entry name, the config that builds and predicts it,
    its fold weight files (fold order) and the folder of its 'oof' store (None in a bundle)."""

    name: str
    cfg: Config
    folds: tuple[Path, ...]
    oof: Path | None = None

    @property
    def section(self) -> dict:
        """Its segment section as plain data: what a bundle stores to rebuild it."""
        return typed.section(self.cfg, "segment")

    @property
    def context(self) -> ContextCfg | None:
        """Mosaic context when its tiles are grown with their neighbours' pixels."""
        return self.cfg.segment.context if self.cfg.segment.context.enabled else None

    @property
    def outputs(self) -> dict:
        """What its network returns: a map per class (or per sub-class, merged), a distance map
        when the auxiliary head is on, image probabilities when the empty-mask head rides on it."""
        seg = self.cfg.segment
        return {
            "classes": list(self.cfg.data.classes) or ["foreground"],
            "subclasses": seg.subclasses.n if seg.subclasses else 0,
            "distance": seg.aux.weight > 0,
            "image_head": self.cfg.classify.seg_head,
        }

    def only(self, folds: list[int]) -> FittedModel:
        """The same model with the weight files of `folds` alone (fold<k>/model.pt)."""
        keep = [p for p in self.folds if fold_of(p) in set(folds)]
        return dataclasses.replace(self, folds=tuple(keep))

    def network(self, channels: int) -> Callable[[], nn.Module]:
        """Builds its network without pretrained weights (a fold file holds every weight)."""
        return seg_network(self.cfg, channels)

    def spec(self, device: torch.device, tta: list[str], fast: bool = True) -> InferSpec:
        """How it predicts; `fast` applies the experiment's compile and batch_tta switches."""
        return seg_infer_spec(self.cfg.segment, device, tta, self.cfg.experiment if fast else None)

    def to_plan(self, folds: list[str], weight: float) -> dict:
        """Its entry in a bundle's plan: blend weight, fold files (relative), segment section."""
        return {"weight": weight, "folds": folds, "segment": self.section}

    @classmethod
    def from_plan(cls, name: str, entry: dict, cfg: Config, root: Path) -> FittedModel:
        """A model from a bundle plan's entry; an entry without a section (a bundle written
        before the contract) is built by the experiment's own segment section."""
        if "segment" in entry:
            segment = typed.build_section(SegmentCfg, entry["segment"], f"bundle.json: models.{name}.segment")
            cfg = dataclasses.replace(cfg, segment=segment)
        return cls(name, cfg, tuple(root / p for p in entry["folds"]))


def fitted_models(cfg: Config, folders: Mapping[str, Path]) -> dict[str, FittedModel]:
    """Each `ensemble.models` entry in `folders` (its folder of fold models and OOF maps) as a
    FittedModel built by its own config (pipeline.config.zoo.entry_cfg)."""
    out = {}
    for name, folder in folders.items():
        paths = fold_model_paths(folder)
        if not paths:
            raise FileNotFoundError(f"no fold models under {folder}")
        out[name] = FittedModel(name, zoo.entry_cfg(cfg, name), tuple(paths), folder)
    return out
