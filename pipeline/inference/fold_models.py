"""Test-time inference from fold model files: the segmentation and classifier networks as the
config builds them, their inference specs, and each model's fold-averaged maps with TTA (and
optional AdaBN); pipeline/inference/ensemble.py blends several. The ensemble stage and the
offline bundle's `predict.py` both run this code, so a bundle reproduces the pipeline's own test
maps; it holds no training code (pipeline/bundle/build.py checks that for the modules a bundle
carries)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from pipeline.config.blocks import InputCfg
from pipeline.config.classify import ClassifyCfg
from pipeline.config.schema import Config, ExperimentCfg
from pipeline.config.segment import SegmentCfg
from pipeline.core.runtime import pick_device
from pipeline.data.geometry import Geometry
from pipeline.inference.predict import InferSpec, adapt_bn, predict
from pipeline.modeling.models import ClassifierNet, build_segmentation


class TestMaps(NamedTuple):
    masks: list[np.ndarray]
    dists: list[np.ndarray] | None
    cls: np.ndarray | None  # image probabilities from the seg_head classifier


def build_model(scfg: SegmentCfg, in_channels: int, cls_head: bool = False, classes: int = 1) -> nn.Module:
    """The segmentation network of `scfg` for `classes` foreground classes (data.n_classes),
    or for its sub-classes of one binary class."""
    # Sub-classes of one class keep one image label: the empty-mask head stays single.
    heads = 1 if scfg.subclasses else classes
    classes = scfg.subclasses.n if scfg.subclasses else classes
    aux = scfg.aux.weight > 0
    return build_segmentation(scfg.model, in_channels, aux=aux, cls_head=cls_head, classes=classes, softmax=scfg.softmax, cls_classes=heads)


def seg_network(cfg: Config, in_channels: int) -> Callable[[], nn.Module]:
    """Builds the segmentation network without pretrained weights: a fold file holds every
    weight, so nothing is loaded (or downloaded) first."""
    scfg = dataclasses.replace(cfg.segment, model=dataclasses.replace(cfg.segment.model, encoder_weights=None))
    return lambda: build_model(scfg, in_channels, cfg.classify.seg_head, cfg.data.n_classes)


def cls_network(cfg: Config, in_channels: int) -> Callable[[], nn.Module]:
    """Builds the classifier network without pretrained weights (see seg_network)."""
    ccfg = dataclasses.replace(cfg.classify.model, encoder_weights=None)
    return lambda: ClassifierNet(ccfg, in_channels, cfg.data.n_classes)


def seg_infer_spec(scfg: SegmentCfg, device: torch.device, tta: list[str], exp: ExperimentCfg | None = None) -> InferSpec:
    """How a segmentation model predicts; the experiment's inference speed switches (compile,
    batch_tta) for OOF and test maps only: validation during training would compile the changing
    weights every epoch."""
    fast = {"compile": exp.compile, "batch_tta": exp.batch_tta} if exp is not None else {}
    geometry, merge = Geometry.from_cfg(scfg.input), scfg.subclasses is not None
    return InferSpec(geometry, tta, device, scfg.train, scfg.aux.signed, scfg.input.tile_overlap, softmax=scfg.softmax, merge=merge, **fast)


def cls_geometry(cfg: ClassifyCfg) -> Geometry:
    """Patch mode is tile geometry at the patch size."""
    if cfg.patch.enabled:
        return Geometry.from_cfg(InputCfg("tile", cfg.patch.size, cfg.patch.size - cfg.patch.stride))
    return Geometry.from_cfg(cfg.input)


def cls_infer_spec(cfg: ClassifyCfg, device: torch.device, tta: list[str]) -> InferSpec:
    overlap = cfg.patch.size - cfg.patch.stride if cfg.patch.enabled else 0
    aggregate = cfg.patch.aggregate if cfg.patch.enabled else "weighted"
    return InferSpec(cls_geometry(cfg), tta, device, cfg.train, overlap=overlap, aggregate=aggregate)


def predict_probs(model: nn.Module, images, indices: np.ndarray, spec: InferSpec) -> np.ndarray:
    """Image-level probabilities (patch outputs aggregated as the spec says)."""
    return np.array([o["cls"] for _, o in predict(model, images, indices, spec)], dtype=np.float64)


def classifier_paths(paths: Sequence[Path]) -> list[Path]:
    """A fold's final classifier is its round-2 fine-tune when patch.second_round_conf made one."""
    return [p.parent / "round2" / "model.pt" if (p.parent / "round2" / "model.pt").exists() else p for p in paths]


class OnnxNet(nn.Module):
    """An exported ONNX fold model run by onnxruntime, with the dict output of the networks."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.keys = [o.name for o in self.session.get_outputs()]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.session.run(None, {"image": x.detach().float().contiguous().cpu().numpy()})
        return {k: torch.from_numpy(o).to(x.device) for k, o in zip(self.keys, outs, strict=True)}


def load_fold(build: Callable[[], nn.Module], path: Path) -> nn.Module:
    """A fold model from its file: a state dict into the network `build` makes, or an exported
    file (pipeline/bundle/export.py) that carries its own graph: TorchScript (`.ts`) or ONNX (`.onnx`)."""
    if path.suffix == ".ts":
        return torch.jit.load(str(path), map_location="cpu")
    if path.suffix == ".onnx":
        return OnnxNet(path)
    model = build()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def seg_test_maps(cfg: Config, paths: Sequence[Path], images, adabn: bool = False) -> TestMaps:
    """Probability (and distance, seg-head classifier) outputs of the fold models in `paths`,
    with TTA, averaged, at each image's original size; `adabn` re-estimates BatchNorm
    statistics on `images` first. `images`: an ArrayStore or any list of HxWxC uint8 arrays."""
    scfg = cfg.segment
    device = pick_device(cfg.experiment)
    spec = seg_infer_spec(scfg, device, scfg.train.tta, cfg.experiment)
    network = seg_network(cfg, images[0].shape[2])
    # Running sums, one image at a time: a fold's whole list of outputs beside the sums would
    # double the memory (K classes of large images: gigabytes).
    sums: dict[str, list] = {"mask": [None] * len(images), "dist": [None] * len(images)}
    cls = 0.0 if cfg.classify.seg_head else None  # (N,) or, from a K-class head, (N, K)
    for path in paths:
        model = load_fold(network, path)
        if adabn:
            model = adapt_bn(model, images, spec.geometry, device, scfg.input.tile_overlap)
        fold_cls = []
        for i, o in predict(model, images, np.arange(len(images)), spec):
            for name in ("mask", "dist") if "dist" in o else ("mask",):
                part = o[name] / len(paths)
                sums[name][i] = part if sums[name][i] is None else sums[name][i] + part
            fold_cls.append(o.get("cls"))
        if cls is not None:
            cls += np.array(fold_cls) / len(paths)
    dists = sums["dist"] if sums["dist"][0] is not None else None
    return TestMaps(sums["mask"], dists, None if cls is None else np.asarray(cls, dtype=np.float64))


def cls_test_probs(cfg: Config, paths: Sequence[Path], images, adabn: bool = False) -> np.ndarray:
    """Test probabilities averaged over the fold classifiers in `paths` (NaN when there are none
    or the classifier is disabled)."""
    if not cfg.classify.enabled or not paths:
        return np.full(len(images), np.nan)  # one NaN per image stands for each of its classes
    device = pick_device(cfg.experiment)
    spec = cls_infer_spec(cfg.classify, device, cfg.classify.train.tta)
    total = 0.0  # (N,) or, for K classes, (N, K)
    for path in paths:
        model = load_fold(cls_network(cfg, images[0].shape[2]), path)
        if adabn:
            model = adapt_bn(model, images, spec.geometry, device, spec.overlap)
        total += predict_probs(model, images, np.arange(len(images)), spec)
    return total / len(paths)
