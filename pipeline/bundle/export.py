"""Export of a bundle's fold models to TorchScript or ONNX, with a parity check: each exported file
runs a batch of training images through the bundle's own inference spec (geometry, TTA,
bf16 and channels_last as configured) beside the eager model, and the largest absolute
difference of every output is recorded in the bundle's plan; an export that drifts past
`TOLERANCE` is refused. An exported file carries its graph; ONNX files run in onnxruntime
(fp32: bf16 autocast does not apply there)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.config.schema import Config
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore
from pipeline.data.geometry import to_tensor
from pipeline.inference.contract import FittedModel
from pipeline.inference.fold_models import cls_infer_spec, cls_network, load_fold
from pipeline.inference.predict import InferSpec, predict

# Probabilities in [0, 1]: bf16 autocast alone moves them by up to ~1e-2 between two runs of
# different kernels; more than this means the traced graph computes something else.
TOLERANCE = 0.02
SAMPLE = 16  # training images in the parity batch
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx"}


def _need_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"bundle --export onnx needs {', '.join(missing)}: pip install {' '.join(missing)}")


def trace(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of `model` (eval mode, fp32 weights), its dict output kept as a dict."""
    model.eval()
    with torch.no_grad():
        # strict=False: the networks return a dict (mask, dist, cls), a fixed set per config.
        return torch.jit.trace(model, example, strict=False, check_trace=False)


class _Outputs(nn.Module):
    """The model with its dict output as a tuple in a fixed key order (ONNX names outputs)."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[k] for k in self.keys)


def to_onnx(model: nn.Module, example: torch.Tensor, dst: Path) -> None:
    """ONNX file of `model` (eval mode, fp32) with a dynamic batch axis and its outputs named
    by the dict keys (mask, dist, cls); onnxruntime runs it (inference.OnnxNet)."""
    model.eval()
    with torch.no_grad():
        keys = list(model(example).keys())
        torch.onnx.export(
            _Outputs(model, keys).eval(),  # a new module starts in training mode
            (example,),
            str(dst),
            input_names=["image"],
            output_names=keys,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            dynamo=True,
            verbose=False,
        )


def max_difference(
    a: nn.Module, b: nn.Module, images, spec: InferSpec, n: int = SAMPLE, spec_b: InferSpec | None = None
) -> dict[str, float]:
    """Largest absolute difference of each output of two models over the first `n` of `images`,
    `a` run under `spec` and `b` under `spec_b` (default: the same)."""
    idx = np.arange(min(n, len(images)))
    diff: dict[str, float] = {}
    for (_, x), (_, y) in zip(predict(a, images, idx, spec), predict(b, images, idx, spec_b or spec), strict=True):
        for k in x:
            diff[k] = max(diff.get(k, 0.0), float(np.max(np.abs(np.asarray(x[k]) - np.asarray(y[k])))))
    return diff


def _export_one(build: Callable[[], nn.Module], src: Path, dst: Path, images: ArrayStore, spec: InferSpec) -> dict[str, float]:
    model = load_fold(build, src)
    # One network input: the whole input in pad and resize modes, one tile in tile and patch modes.
    s = spec.geometry.size
    example = torch.stack([to_tensor(spec.geometry.forward(np.asarray(images[i]))[:s, :s]) for i in range(min(2, len(images)))])
    if len(example) == 1:
        example = example.expand(2, *example.shape[1:])
    if dst.suffix == ".onnx":
        to_onnx(model, example, dst)
        # onnxruntime computes in fp32: compared with the eager model in fp32, so that the check
        # measures the export, not bf16's rounding (which the eager model under autocast adds).
        spec = dataclasses.replace(spec, tcfg=dataclasses.replace(spec.tcfg, bf16="off"))
    else:
        torch.jit.save(trace(model, example), str(dst))
    diff = max_difference(model, load_fold(build, dst), images, spec)
    worst = max(diff.values())
    if worst > TOLERANCE:
        raise UserError(f"bundle --export: {dst.name} differs from the eager model by {worst:.4f} (> {TOLERANCE}); not exported")
    return diff


def export_models(cfg: Config, plan: dict, out: Path, kind: str, ingest: Path) -> dict:
    """Replace the bundle's state dicts (segmentation and classifier folds) by TorchScript files
    that match the eager models on training images; returns the updated plan."""
    if kind not in SUFFIX:
        raise UserError(f"bundle --export: unknown format {kind!r}; valid: {', '.join(SUFFIX)}")
    if cfg.ensemble.adabn:
        raise UserError(
            f"bundle --export: ensemble.adabn re-estimates BatchNorm statistics on the test set, which a frozen {kind} graph cannot"
        )
    if kind == "onnx":
        _need_onnx()
    images = ArrayStore(ingest, "images")
    device = torch.device("cpu")
    channels = images[0].shape[2]
    cls_spec = cls_infer_spec(cfg.classify, device, list(cfg.classify.train.tta))
    parity: dict[str, dict[str, float]] = {}
    jobs = []
    for name, entry in plan["models"].items():  # each model by its own section (pipeline/inference/contract.py)
        model = FittedModel.from_plan(name, entry, cfg, out)
        spec = model.spec(device, list(plan["tta"]), fast=False)
        jobs += [(rel, model.network(channels), spec) for rel in entry["folds"]]
    jobs += [(rel, cls_network(cfg, channels), cls_spec) for rel in plan["classifier"]]
    renamed = {}
    for rel, build, spec in jobs:
        dst = str(Path(rel).with_suffix(SUFFIX[kind]))
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
