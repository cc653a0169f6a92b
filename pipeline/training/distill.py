"""Knowledge distillation: one student trained on a blend's soft maps (Hinton et al., 2015).

Honest CV: the student of fold k learns only from fold k's teachers, the fold-k models of each
blended model, blended with fold k's nested weights. None of those models trained on fold k's
images, so their soft maps of the student's training part (images they trained on) and of the
test images carry no label of fold k. The blend's own OOF maps would not do: the map of a
training image in fold j comes from fold j's models, which trained on fold k (a second-order
leak). One weak residual remains, as in the ensemble stage: fold k's few blend weights are
fitted on the other folds' OOF maps, made by models that trained on fold k.

A target is `weight` x the teacher's probability, softened by a temperature (its logit divided
by T), plus (1 - weight) x the hard mask; a test image has no mask, so its target is the
softened probability alone."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.config.schema import Config
from pipeline.config.teachers import DistillCfg
from pipeline.core.store import quantise
from pipeline.inference.contract import FittedModel
from pipeline.inference.fold_models import seg_test_maps

EPS = 1e-4


def temper(prob: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their logits divided by `temperature` (> 1 softens)."""
    p = np.clip(prob, EPS, 1 - EPS)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))


def target(prob: np.ndarray, hard: np.ndarray | None, cfg: DistillCfg) -> np.ndarray:
    """The student's training target as a soft (h, w, 1) uint8 mask (p x 255)."""
    soft = temper(prob, cfg.temperature)
    mixed = soft if hard is None else cfg.weight * soft + (1 - cfg.weight) * hard.astype(np.float32)
    return quantise(mixed)[..., None]


class Teachers:
    """Fold k's teachers: each blended model (a FittedModel: its config and fold weight files),
    predicted by its own config; and the config of the student they teach."""

    def __init__(self, models: Mapping[str, FittedModel], student: Config) -> None:
        self.models, self.student = models, student

    def maps(self, k: int, weights: Sequence[float], images, adabn: bool) -> list[np.ndarray]:
        """The weighted blend of fold k's teachers' probability maps of `images` (with each
        model's TTA, at each image's size)."""
        out: list[np.ndarray] | None = None
        for (name, model), w in zip(self.models.items(), weights, strict=True):
            paths = list(model.only([k]).folds)
            if not paths:
                raise FileNotFoundError(f"distill: {name} has no fold{k} model under {model.oof}")
            masks = seg_test_maps(model.cfg, paths, images, adabn).masks
            out = [w * m for m in masks] if out is None else [o + w * m for o, m in zip(out, masks, strict=True)]
        return out

    def of_folds(self, folds: list[int]) -> list[FittedModel]:
        """Each teacher with its models of `folds` (a submission of the blend runs them all)."""
        return [model.only(folds) for model in self.models.values()]


def images_per_second(models: Sequence[FittedModel], images, adabn: bool) -> float:
    """Test inference speed of every fold model of every model in `models` (as a submission
    runs them: each model's TTA and input size), in images per second."""
    warm = [images[i] for i in range(min(8, len(images)))]
    for model in models:  # untimed: first reads, allocator and kernel warm-up
        seg_test_maps(model.cfg, list(model.folds[:1]), warm, adabn)
    start = time.perf_counter()
    for model in models:
        seg_test_maps(model.cfg, list(model.folds), images, adabn)
    return len(images) / (time.perf_counter() - start)
