"""The options a stage hands to a fold beside the config's: a pseudo round's extra samples,
starting weights and mean teacher; a distilled student's soft targets. `FoldExtras` is how the
pseudo and distill stages say which; `options()` turns it into plug-ins."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pipeline.training.mean_teacher import MeanTeacher
from pipeline.training.options.base import Fold, Option


@dataclasses.dataclass
class FoldExtras:
    """What a fine-tuning round adds to a fold's plain training: pseudo-labelled samples
    (dataset, coverage) for the training part only, weights to start from, a mean
    teacher's consistency loss on unlabeled images; or, for a distilled student, soft targets
    (p x 255, by store position) in place of the training part's masks."""

    extra: tuple[torch.utils.data.Dataset, np.ndarray] | None = None
    init: Path | None = None
    teacher: MeanTeacher | None = None
    soft_masks: Mapping[int, np.ndarray] | None = None

    def options(self) -> list[Option]:
        out: list[Option] = []
        if self.init is not None:
            out.append(StartFrom(self.init))
        if self.soft_masks is not None:
            out.append(SoftTargets(self.soft_masks))
        if self.extra is not None:
            out.append(ExtraSamples(*self.extra))
        if self.teacher is not None:
            out.append(Teacher(self.teacher))
        return out


@dataclasses.dataclass
class StartFrom(Option):
    """Fine-tune from saved weights (a pseudo round starts from the previous round's model)."""

    path: Path

    def start(self, fold: Fold, model: torch.nn.Module) -> None:
        model.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))


@dataclasses.dataclass
class SoftTargets(Option):
    """A student's targets: the teachers' soft maps in place of the training part's masks."""

    maps: Mapping[int, np.ndarray]

    def targets(self, fold: Fold) -> None:
        fold.masks, fold.soft = self.maps, True


@dataclasses.dataclass
class ExtraSamples(Option):
    """Pseudo-labelled test images beside the training part, with their coverage (for the
    oversampling bins); they keep sampling weight 1."""

    dataset: torch.utils.data.Dataset
    coverage: np.ndarray

    def samples(self, fold: Fold) -> None:
        fold.dataset = torch.utils.data.ConcatDataset([fold.dataset, self.dataset])
        fold.coverage = np.concatenate([fold.coverage, self.coverage])


@dataclasses.dataclass
class Teacher(Option):
    """A mean teacher's consistency loss on unlabeled images, as a hook of each step."""

    teacher: MeanTeacher

    def task(self, fold: Fold) -> None:
        fold.task = dataclasses.replace(fold.task, hook=self.teacher)
