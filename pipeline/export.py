"""Export of a bundle's fold models to TorchScript, with a parity check: each exported file
runs a batch of training images through the bundle's own inference spec (geometry, TTA,
bf16 and channels_last as configured) beside the eager model, and the largest absolute
difference of every output is recorded in the bundle's plan; an export that drifts past
`TOLERANCE` is refused. A TorchScript file carries its graph, so predict.py then needs
neither smp nor the network code."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.geometry import to_tensor
from pipeline.inference import build_model, cls_infer_spec, seg_infer_spec
from pipeline.models import ClassifierNet
from pipeline.predict import InferSpec, predict
from pipeline.schema import Config
from pipeline.store import ArrayStore

# Probabilities in [0, 1]: bf16 autocast alone moves them by up to ~1e-2 between two runs of
# different kernels; more than this means the traced graph computes something else.
TOLERANCE = 0.02
SAMPLE = 16  # training images in the parity batch


def trace(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of `model` (eval mode, fp32 weights), its dict output kept as a dict."""
    model.eval()
    with torch.no_grad():
        # strict=False: the networks return a dict (mask, dist, cls), a fixed set per config.
        return torch.jit.trace(model, example, strict=False, check_trace=False)


def max_difference(a: nn.Module, b: nn.Module, images: ArrayStore, spec: InferSpec) -> dict[str, float]:
    """Largest absolute difference of each output of two models over `images` under `spec`."""
    idx = np.arange(min(SAMPLE, len(images)))
    diff: dict[str, float] = {}
    for (_, x), (_, y) in zip(predict(a, images, idx, spec), predict(b, images, idx, spec), strict=True):
        for k in x:
            diff[k] = max(diff.get(k, 0.0), float(np.max(np.abs(np.asarray(x[k]) - np.asarray(y[k])))))
    return diff


def _export_one(build: Callable[[], nn.Module], src: Path, dst: Path, images: ArrayStore, spec: InferSpec) -> dict[str, float]:
    model = build()
    model.load_state_dict(torch.load(src, map_location="cpu", weights_only=True))
    example = torch.stack([to_tensor(spec.geometry.forward(np.asarray(images[i]))) for i in range(min(2, len(images)))])
    if len(example) == 1:
        example = example.expand(2, *example.shape[1:])
    exported = trace(model, example)
    torch.jit.save(exported, str(dst))
    diff = max_difference(model, torch.jit.load(str(dst), map_location="cpu"), images, spec)
    worst = max(diff.values())
    if worst > TOLERANCE:
        raise UserError(f"bundle --export: {dst.name} differs from the eager model by {worst:.4f} (> {TOLERANCE}); not exported")
    return diff


def export_models(cfg: Config, plan: dict, out: Path, kind: str, ingest: Path) -> dict:
    """Replace the bundle's state dicts (segmentation and classifier folds) by TorchScript files
    that match the eager models on training images; returns the updated plan."""
    if kind != "torchscript":
        raise UserError(f"bundle --export: unknown format {kind!r}; valid: torchscript")
    if cfg.ensemble.adabn:
        raise UserError(
            "bundle --export: ensemble.adabn re-estimates BatchNorm statistics on the test set, which a frozen TorchScript graph cannot"
        )
    images = ArrayStore(ingest, "images")
    device = torch.device("cpu")
    scfg = dataclasses.replace(cfg.segment, model=dataclasses.replace(cfg.segment.model, encoder_weights=None))
    ccfg = dataclasses.replace(cfg.classify.model, encoder_weights=None)
    channels = images[0].shape[2]
    seg_spec = seg_infer_spec(cfg.segment, device, list(plan["tta"]))
    cls_spec = cls_infer_spec(cfg.classify, device, list(cfg.classify.train.tta))
    parity: dict[str, dict[str, float]] = {}
    jobs = [
        (rel, lambda: build_model(scfg, channels, cfg.classify.seg_head), seg_spec) for m in plan["models"].values() for rel in m["folds"]
    ]
    jobs += [(rel, lambda: ClassifierNet(ccfg, channels), cls_spec) for rel in plan["classifier"]]
    renamed = {}
    for rel, build, spec in jobs:
        dst = str(Path(rel).with_suffix(".ts"))
        parity[dst] = _export_one(build, out / rel, out / dst, images, spec)
        (out / rel).unlink()
        renamed[rel] = dst
    models = {name: {**m, "folds": [renamed[r] for r in m["folds"]]} for name, m in plan["models"].items()}
    return {
        **plan,
        "models": models,
        "classifier": [renamed[r] for r in plan["classifier"]],
        "export": {"kind": kind, "max_abs_diff": parity},
    }
