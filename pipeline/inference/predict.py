"""Inference with TTA at each image's original size, and saving maps as quantised stores.

Spatial outputs ('mask', 'dist') come back as maps of the image's (h, w); scalar outputs
('cls', 'cov') as floats. Tile mode slides a window and blends overlapping tiles with a
confidence weight: an edge ramp times how far each pixel's probability is from 0.5, so
that a confident tile outweighs an unsure neighbour where they overlap."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from pipeline.config.blocks import FitCfg
from pipeline.core import progress, runtime
from pipeline.core.store import ArrayStore, quantise, write_store
from pipeline.data.geometry import Geometry, to_tensor
from pipeline.neighbours.mosaic_context import crop, margin_of

logger = logging.getLogger(__name__)
FLIPS = {"none": (), "hflip": (3,), "vflip": (2,)}


def squash(name: str, t: torch.Tensor, signed: bool = False, softmax: bool = False, merge: bool = False) -> torch.Tensor:
    """Map a raw head output to its range: probabilities (a softmax's background channel
    dropped: one map per class), or the distance map's range. `merge`: the classes are
    sub-classes of one class, merged into one map (their probabilities' sum, 1 - background;
    the largest of their distance maps)."""
    if name == "dist":
        out = (torch.tanh(t) + 1) / 2 if signed else torch.sigmoid(t)
        return out.amax(dim=1, keepdim=True) if merge and out.dim() == 4 else out
    if name == "mask" and softmax:
        probs = torch.softmax(t, dim=1)[:, 1:]
        return probs.sum(dim=1, keepdim=True) if merge else probs
    return torch.sigmoid(t)


def to_image(maps: np.ndarray, restore: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(C, H, W) network maps -> one map at image size: (h, w) for one channel (a binary task,
    as always), (h, w, C) for C classes; `restore` undoes the geometry of one (H, W) map."""
    if len(maps) == 1:
        return restore(maps[0])
    return np.stack([restore(m) for m in maps], axis=-1)


class _Compiled(nn.Module):
    """`model` through torch.compile, falling back to `model` itself (with one warning) when
    compiling fails: a missing compiler or an unsupported op must not stop an inference."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.eager, self.fast = model, torch.compile(model, dynamic=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.fast is not None:
            try:
                return self.fast(x)
            except Exception as exc:  # torch._dynamo/inductor raise many kinds
                logger.warning(f"torch.compile failed, predicting eagerly: {type(exc).__name__}: {str(exc)[:200]}")
                self.fast = None
        return self.eager(x)


def compiled(model: nn.Module) -> nn.Module:
    """`model` compiled by inductor for inference, its weights frozen as constants so that each
    BatchNorm folds into its convolution (on this CPU: 0.26k -> 0.7-0.9k forward passes/s of the
    tgs_salt model at batch 32, bf16; bench/infer_speed.py). Compiling takes 6-25 s per model."""
    import torch._inductor.config as inductor

    inductor.freezing = True  # read when the model first runs; only affects no-grad inference
    return _Compiled(model)


@torch.no_grad()
def _forward_tta(model: nn.Module, x: torch.Tensor, spec: InferSpec) -> dict[str, torch.Tensor]:
    tta = list(spec.tta) or ["none"]
    # batch_tta: all views in one forward pass, fewer and larger GEMMs (bench/cpu_throughput.py);
    # otherwise one view at a time, summed as they come (the peak memory of one view).
    groups = [tta] if spec.batch_tta and len(tta) > 1 else [[op] for op in tta]
    acc: dict[str, torch.Tensor] = {}
    for ops in groups:
        xi = torch.cat([torch.flip(x, FLIPS[op]) if FLIPS[op] else x for op in ops])
        if spec.tcfg.channels_last:
            xi = xi.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(spec.device, spec.tcfg):
            out = model(xi)
        for k, v in out.items():
            for op, part in zip(ops, squash(k, v.float(), spec.signed, spec.softmax, spec.merge).split(len(x)), strict=True):
                if part.dim() == 4 and FLIPS[op]:
                    part = torch.flip(part, FLIPS[op])
                acc[k] = acc[k] + part if k in acc else part
    return {k: (v / len(tta)).cpu() for k, v in acc.items()}


def _ramp(size: int, overlap: int) -> np.ndarray:
    r = np.ones(size, np.float32)
    if overlap > 0:
        edge = np.linspace(0.1, 1.0, overlap, dtype=np.float32)
        r[:overlap], r[-overlap:] = edge, edge[::-1]
    return np.outer(r, r)


@dataclass
class _TilePlan:
    h: int
    w: int
    ph: int
    pw: int
    crops: list[tuple[int, int]]
    tiles: torch.Tensor


def tile_grid(h: int, w: int, size: int, step: int) -> list[tuple[int, int]]:
    """Top-left corners of a sliding window of `size` every `step` pixels that covers an
    h x w image, the last row and column flush with its far edges."""
    ys = sorted({*range(0, max(h - size, 0) + 1, step), max(h - size, 0)})
    xs = sorted({*range(0, max(w - size, 0) + 1, step), max(w - size, 0)})
    return [(y, x) for y in ys for x in xs]


def _plan_tiles(img: np.ndarray, geometry: Geometry, overlap: int) -> _TilePlan:
    s = geometry.size
    h, w = img.shape[:2]
    padded = Geometry("tile", s).forward(img)
    ph, pw = padded.shape[:2]
    step = max(s - overlap, 1)
    crops = tile_grid(ph, pw, s, step)
    return _TilePlan(h, w, ph, pw, crops, torch.stack([to_tensor(padded[y : y + s, x : x + s]) for y, x in crops]))


def _blend_tiles(plan: _TilePlan, out: dict[str, torch.Tensor], size: int, overlap: int, aggregate: str) -> dict:
    ramp = _ramp(size, min(overlap, size // 2))
    result: dict = {}
    for k, v in out.items():
        if v.dim() == 4:
            result[k] = to_image(v.numpy().transpose(1, 0, 2, 3), lambda tiles: _blend_channel(plan, tiles, ramp, size))
        else:  # image-level outputs: one per tile (and per class), aggregated over the tiles
            result[k] = _scalar(_aggregate(v.numpy(), aggregate))
    return result


def _aggregate(tiles: np.ndarray, aggregate: str) -> np.ndarray:
    if aggregate == "max":
        return tiles.max(axis=0)
    conf = np.abs(2 * tiles - 1) + 1e-3
    return (tiles * conf).sum(axis=0) / conf.sum(axis=0)


def _scalar(value: torch.Tensor | np.ndarray) -> float | np.ndarray:
    """An image-level output: a float, or one value per class of a K-class head."""
    value = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return float(value) if value.ndim == 0 else value.astype(np.float64)


def _blend_channel(plan: _TilePlan, tiles: np.ndarray, ramp: np.ndarray, size: int) -> np.ndarray:
    """One channel's tiles (n, s, s) into the image, each pixel weighted by the edge ramp and
    its confidence, cropped back to the image."""
    acc, wsum = np.zeros((plan.ph, plan.pw), np.float32), np.zeros((plan.ph, plan.pw), np.float32)
    for (y, x), tile in zip(plan.crops, tiles, strict=True):
        wt = ramp * (0.05 + np.abs(2 * tile - 1))
        acc[y : y + size, x : x + size] += wt * tile
        wsum[y : y + size, x : x + size] += wt
    top, left = (plan.ph - plan.h) // 2, (plan.pw - plan.w) // 2
    return (acc / np.maximum(wsum, 1e-6))[top : top + plan.h, left : left + plan.w]


def _predict_tiled(model: nn.Module, images: ArrayStore, indices: np.ndarray, spec: InferSpec) -> Iterator[tuple[int, dict]]:
    # Tiles of several images can share a forward pass (`tile_batch` tiles at least): one image
    # gives only a few tiles, too small a batch for a GPU. On CPU, bigger batches did not pay
    # (bench/tile_inference.py, magnetic_tile, 60 images: 0.74x at 32 tiles, 0.97x at 16, 1.13x
    # at 8 against one image per pass, within noise), hence one image per pass by default there.
    tile_batch = spec.tile_batch
    if tile_batch is None:
        tile_batch = spec.batch_size if spec.device.type == "cuda" else 1
    size = spec.geometry.size
    pending: list[tuple[int, _TilePlan]] = []
    n_tiles = 0
    for pos, idx in enumerate(indices):
        pending.append((int(idx), _plan_tiles(np.asarray(images[int(idx)]), spec.geometry, spec.overlap)))
        n_tiles += len(pending[-1][1].crops)
        if n_tiles < tile_batch and pos < len(indices) - 1:
            continue
        out = _forward_tta(model, torch.cat([p.tiles for _, p in pending]).to(spec.device), spec)
        start = 0
        for i, plan in pending:
            n = len(plan.crops)
            yield i, _blend_tiles(plan, {k: v[start : start + n] for k, v in out.items()}, size, spec.overlap, spec.aggregate)
            start += n
        pending, n_tiles = [], 0


@dataclass(frozen=True)
class InferSpec:
    """How a model is run over images: the geometry, TTA views, device, precision (bf16 and
    channels_last from a train section), and for tile mode the overlap and the aggregation
    of image-level outputs (weighted or max)."""

    geometry: Geometry
    tta: Sequence[str]
    device: torch.device
    tcfg: FitCfg
    signed: bool = False
    overlap: int = 0
    batch_size: int = 32
    aggregate: str = "weighted"
    tile_batch: int | None = None
    compile: bool = False  # torch.compile the model first (pad and resize modes)
    batch_tta: bool = False  # the TTA views of a batch in one forward pass
    softmax: bool = False  # mask logits are a softmax over background + classes (segment.target multiclass)
    merge: bool = False  # sub-classes of one class (segment.subclasses): one map, 1 - background


def predict(model: nn.Module, images: ArrayStore, indices: np.ndarray, spec: InferSpec) -> Iterator[tuple[int, dict]]:
    """Yield (store index, outputs at the image's original size) for each index. In tile mode a
    forward pass holds the tiles of whole images, at least `tile_batch` of them (default: one
    image's tiles on CPU, `batch_size` on a GPU)."""
    yield from progress.bar(_predict(model, images, indices, spec), "predict", len(indices))


def _predict(model: nn.Module, images: ArrayStore, indices: np.ndarray, spec: InferSpec) -> Iterator[tuple[int, dict]]:
    model.eval()
    model.to(spec.device)
    if spec.tcfg.channels_last:
        model.to(memory_format=torch.channels_last)
    indices = np.asarray(indices)
    if spec.geometry.mode == "tile":
        yield from _predict_tiled(model, images, indices, spec)
        return
    geometry, margin = spec.geometry, margin_of(images)
    if spec.compile and len(indices):
        model = compiled(model)
    for start in range(0, len(indices), spec.batch_size):
        chunk = indices[start : start + spec.batch_size]
        arrays = [np.asarray(images[int(i)]) for i in chunk]
        x = torch.stack([to_tensor(geometry.forward(a)) for a in arrays]).to(spec.device)
        if spec.compile and len(chunk) < spec.batch_size:
            # One batch shape: a short last batch would compile the model again (tens of seconds).
            x = torch.cat([x, x[-1:].expand(spec.batch_size - len(chunk), *x.shape[1:])])
        out = _forward_tta(model, x, spec)
        for j, idx in enumerate(chunk):
            h, w = arrays[j].shape[:2]
            # A grown tile (pipeline/neighbours/mosaic_context.py) is predicted whole and cut back to the tile.
            yield int(idx), {k: crop(_restore(v[j], geometry, h, w), margin) if v.dim() == 4 else _scalar(v[j]) for k, v in out.items()}
    if spec.compile:
        # Each model's frozen weights are guarded by identity, so every fold model compiles anew;
        # left in dynamo's cache, they would pile up (and stop compiling at its recompile limit).
        torch._dynamo.reset()


def _restore(maps: torch.Tensor, geometry: Geometry, h: int, w: int) -> np.ndarray:
    return to_image(maps.numpy(), lambda m: geometry.backward(m, h, w))


def adapt_bn(
    model: nn.Module, images: ArrayStore, geometry: Geometry, device: torch.device, overlap: int = 0, batch_size: int = 32
) -> nn.Module:
    """AdaBN: a copy of `model` whose BatchNorm statistics are re-estimated on `images` (the test
    set), for a test domain shifted from train (another scanner, gain or offset); weights stay."""
    adapted = copy.deepcopy(model).to(device)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in adapted.modules()):
        return adapted

    def batches() -> Iterator[torch.Tensor]:
        tiles = []
        for i in range(len(images)):
            img = np.asarray(images[i])
            tiles.extend(_plan_tiles(img, geometry, overlap).tiles if geometry.mode == "tile" else [to_tensor(geometry.forward(img))])
            while len(tiles) >= batch_size:
                yield torch.stack(tiles[:batch_size])
                tiles = tiles[batch_size:]
        if len(tiles) > 1:  # BatchNorm rejects a 1-sample batch in training mode
            yield torch.stack(tiles)

    with torch.no_grad():
        update_bn(batches(), adapted, device)
    adapted.eval()
    return adapted


def save_maps(folder, name: str, ids: list[str], maps: list[np.ndarray]) -> None:
    """Quantised maps into an ArrayStore `name` in `folder`."""
    write_store(folder, name, ((i, quantise(m)) for i, m in zip(ids, maps, strict=True)))
