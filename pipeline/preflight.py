"""Checks that need the heavy libraries (albumentations, smp/timm), run once before any stage
trains: a misspelt augmentation or encoder must fail in seconds, not when its stage starts
after an hour of training. The config's own check (pipeline/config/validate.py) stays import-light
so that `status` and `--help` stay instant; these run only when stages are about to run."""

from __future__ import annotations

import dataclasses

from pipeline.config.schema import Config
from pipeline.core import distributed
from pipeline.core.errors import UserError
from pipeline.data.datasets import build_augment


def _augments(cfg: Config) -> list[str]:
    problems = []
    for key, specs in (("segment.train.augment", cfg.segment.train.augment), ("classify.train.augment", cfg.classify.train.augment)):
        try:
            build_augment(specs, 0)
        except UserError as exc:
            problems.append(f"{key}: {str(exc).removeprefix('train.augment: ')}")
    return problems


def _section(name: str, message: str) -> str:
    """models.py names keys from the model section down ('model.encoder: ...'): say whose."""
    return f"{name}.{message}" if message.startswith("model.") else message


def _models(cfg: Config) -> list[str]:
    """Build each network once without weights (no download, no wheel): smp and timm refuse an
    unknown encoder or an architecture it cannot pair with only at construction."""
    from pipeline.modeling.models import ClassifierNet, build_segmentation

    problems = []
    seg = dataclasses.replace(cfg.segment.model, encoder_weights=None)
    try:
        net = build_segmentation(seg, 3, aux=cfg.segment.aux.weight > 0, cls_head=cfg.classify.seg_head)
        problems += _output_size(net, cfg.segment.model.arch, cfg.segment.input.size)
    except UserError as exc:
        problems.append(_section("segment", str(exc)))
    except Exception as exc:  # smp/timm raise KeyError, ValueError, RuntimeError... for bad names
        problems.append(f"segment.model: {seg.arch} with encoder {seg.encoder!r} cannot be built: {exc}".replace("\n", " "))
    if cfg.classify.enabled and not cfg.classify.seg_head:
        cls = dataclasses.replace(cfg.classify.model, encoder_weights=None)
        try:
            ClassifierNet(cls, 3)
        except UserError as exc:
            problems.append(_section("classify", str(exc)))
        except Exception as exc:
            problems.append(f"classify.model: encoder {cls.encoder!r} cannot be built: {exc}".replace("\n", " "))
    return problems


def _output_size(net, arch: str, size: int) -> list[str]:
    """Some smp architectures predict at a fraction of the input (PSPNet at 1/8 with its own
    encoder depth, say): every stage here needs maps of the input's size."""
    import torch

    with torch.no_grad():
        got = tuple(net.eval()(torch.zeros(1, 3, size, size))["mask"].shape[-2:])
    if got != (size, size):
        return [
            f"segment.model: {arch} predicts {got[0]}x{got[1]} maps for {size}x{size} inputs; the pipeline needs maps of the input's size"
        ]
    return []


def _oof_folds(cfg: Config, target: str) -> list[str]:
    """The scorer's nested CV needs OOF maps of two folds at least."""
    folds = cfg.segment.train.folds
    if target in ("scorer", "submit", "all") and len(folds) == 1:
        return [
            f"segment.train.folds: [{folds[0]}] gives OOF maps of one fold, and the scorer's nested CV needs two"
            " at least; list two folds or [] (all), or run only the stages up to ensemble"
        ]
    return []


def _world(cfg: Config) -> list[str]:
    """Under torchrun each process loads an equal share of the global batch."""
    pairs = (("segment.train.batch_size", cfg.segment.train.batch_size), ("classify.train.batch_size", cfg.classify.train.batch_size))
    problems = (distributed.batch_problem(b, key, distributed.world()) for key, b in pairs)
    return [p for p in problems if p]


def check(cfg: Config, target: str = "all") -> None:
    """Raise UserError (one line per problem) for augmentations or networks that cannot be
    built, and for settings the stages up to `target` cannot work with."""
    problems = _augments(cfg) + _models(cfg) + _oof_folds(cfg, target) + _world(cfg)
    if problems:
        raise UserError("\n".join(problems))
