"""Image embeddings by metric learning with a classification constraint (the embed stage).

The network is an encoder whose stages (`embed.model.stages`) are each average-pooled,
L2-normalised and concatenated (the seed's multi-scale trick: the normalisation keeps the wide
deep stages from drowning the shallow ones, whose texture statistics tell tiles of one section
apart). Training sees every image, train and test alike, as two augmented views:
- the metric loss is NT-Xent (SimCLR's normalised-temperature cross-entropy) over a projection
  head, each view's positive being the other view of its image;
- the classification constraint ("a classification constraint on the features usually improves
  metric learning and speeds convergence") predicts, from the embedding itself, whether a train
  image's mask is empty and its coverage bin; test images have no labels and skip it.
The embedding used downstream is the pooled one, before the projection head (SimCLR's finding:
the layer before the projection keeps more of what the augmentations discard)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own spelling)
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn
from torch.utils.data import Dataset

from pipeline.config.embed import EmbedCfg, EmbedModelCfg
from pipeline.core import progress
from pipeline.core.store import ArrayStore
from pipeline.data.datasets import build_augment, coverage_bin
from pipeline.data.geometry import Geometry, to_tensor
from pipeline.inference.predict import tile_grid
from pipeline.modeling.models import check_weights, init_encoder
from pipeline.training.loop import Fitter
from pipeline.training.step import Task

BINS = ("empty", "small", "medium", "large")  # datasets.coverage_bin's names, as class indices


class EmbedNet(nn.Module):
    """Encoder -> per-stage pooled, L2-normalised features, concatenated ('emb'); a projection
    for the metric loss ('z'); empty-mask and coverage-bin logits from the embedding."""

    def __init__(self, cfg: EmbedModelCfg, in_channels: int) -> None:
        super().__init__()
        check_weights(cfg)
        self.stages = sorted(cfg.stages)
        weights = "imagenet" if cfg.encoder_weights == "imagenet" else None
        self.encoder = get_encoder(cfg.encoder, in_channels=in_channels, depth=max(cfg.encoder_depth, self.stages[-1]), weights=weights)
        init_encoder(self.encoder, cfg)
        width = sum(self.encoder.out_channels[s] for s in self.stages)
        self.project = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, cfg.projection))
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.Linear(width, 1 + len(BINS))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        pooled = [F.normalize(feats[s].float().mean(dim=(2, 3)), dim=1) for s in self.stages]
        # Divided by sqrt(stages): the concatenation of unit vectors is itself a unit vector.
        return torch.cat(pooled, dim=1) / len(pooled) ** 0.5

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.embed(x)
        logits = self.heads(self.dropout(emb))
        return {"emb": emb, "z": F.normalize(self.project(emb), dim=1), "empty": logits[:, 0], "bins": logits[:, 1:]}


@dataclass(frozen=True)
class Images:
    """Train and test images as one indexable collection, with the train images' coverage
    (NaN for the test images, which have no mask)."""

    stores: tuple[ArrayStore, ...]
    refs: np.ndarray  # (N, 2): store number, index in it
    coverage: np.ndarray

    @classmethod
    def of(cls, train: ArrayStore, coverage: np.ndarray, test: ArrayStore | None) -> Images:
        n_test = len(test.ids) if test is not None else 0
        refs = [(0, i) for i in range(len(train.ids))] + [(1, i) for i in range(n_test)]
        cov = np.concatenate([np.asarray(coverage, float), np.full(n_test, np.nan)])
        return cls((train,) if test is None else (train, test), np.array(refs, dtype=int).reshape(-1, 2), cov)

    def __len__(self) -> int:
        return len(self.refs)

    def get(self, i: int) -> np.ndarray:
        s, j = self.refs[i]
        return np.asarray(self.stores[s][int(j)])

    @property
    def in_channels(self) -> int:
        return self.get(0).shape[-1]


class ViewDataset(Dataset):
    """Each image resized to the embedding size, as two independently augmented views
    (a (2, C, S, S) tensor), with its empty label and coverage-bin index (-1: unlabelled)."""

    def __init__(self, images: Images, size: int, augment: list[dict], seed: int) -> None:
        self.images, self.geometry, self.seed = images, Geometry("resize", size), seed
        self.augment = build_augment(augment, seed)
        labelled = ~np.isnan(images.coverage)
        bins = np.full(len(images), -1)
        bins[labelled] = [BINS.index(b) for b in coverage_bin(images.coverage[labelled])]
        self.bins = bins

    def reseed(self, key: Sequence[int]) -> None:
        # As SegDataset.reseed: the views depend on (seed, epoch, position) alone.
        aug, aug_py = np.random.SeedSequence([self.seed % 2**64, *key]).spawn(2)
        if self.augment is not None:
            self.augment.set_random_state(np.random.default_rng(aug), random.Random(int(aug_py.generate_state(1, np.uint64)[0])))

    def __len__(self) -> int:
        return len(self.images)

    def _view(self, img: np.ndarray) -> torch.Tensor:
        if self.augment is not None:
            img = self.augment(image=img)["image"]
            # A crop transform may output another size than embed.size: back to it.
            img = self.geometry.forward(img) if img.shape[:2] != (self.geometry.size,) * 2 else img
            img = img[..., None] if img.ndim == 2 else img
        return to_tensor(img)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = self.geometry.forward(self.images.get(i))
        return {"image": torch.stack([self._view(img), self._view(img)]), "bin": torch.tensor(int(self.bins[i]))}


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss over 2B unit vectors, the views of image i at rows i and B + i."""
    n = z.shape[0] // 2
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own positive nor a negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _stack_views(batch: dict, epoch: int) -> dict:
    """(B, 2, C, H, W) -> (2B, C, H, W): the first views, then the second ones."""
    views = batch["image"]
    return {"image": torch.cat([views[:, 0], views[:, 1]]), "bin": torch.cat([batch["bin"], batch["bin"]])}


def embed_task(cfg: EmbedCfg, validate) -> Task:
    def loss(out, batch, epoch):
        metric = nt_xent(out["z"], cfg.temperature)
        parts, total = {"nt_xent": float(metric.detach())}, metric
        bins = batch["bin"]
        labelled = bins >= 0
        if cfg.constraint > 0 and labelled.any():
            empty = F.binary_cross_entropy_with_logits(out["empty"][labelled], (bins[labelled] == 0).float())
            cover = F.cross_entropy(out["bins"][labelled], bins[labelled])
            parts |= {"empty": float(empty.detach()), "bin": float(cover.detach())}
            total = total + cfg.constraint * (empty + cover)
        return total, parts

    return Task(loss=loss, validate=validate, prepare=_stack_views)


@torch.no_grad()
def extract(model: EmbedNet, images: Images, size: int, device: torch.device, batch: int = 128) -> np.ndarray:
    """(N, D) embeddings of whole images resized to `size`: the mean of the image's and its
    mirror's, L2-normalised."""
    model.eval().to(device)
    geometry, out = Geometry("resize", size), []
    for start in progress.bar(range(0, len(images), batch), "embed", unit="batch"):
        x = torch.stack([to_tensor(geometry.forward(images.get(i))) for i in range(start, min(start + batch, len(images)))]).to(device)
        out.append(F.normalize(model.embed(x) + model.embed(x.flip(-1)), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def extract_patches(model: EmbedNet, images: Images, size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the `size` patches (native scale, half-overlapping tile grid) of every
    image larger than `size`, and their (image, y, x) rows; large images hold defects too
    small to survive the whole image's resize."""
    model.eval().to(device)
    embs, rows = [], []
    for i in progress.bar(range(len(images)), "embed patches"):
        img = images.get(i)
        h, w = img.shape[:2]
        if h <= size and w <= size:
            continue
        padded = Geometry("tile", size).forward(img)
        crops = tile_grid(*padded.shape[:2], size, size // 2)
        x = torch.stack([to_tensor(padded[y : y + size, x0 : x0 + size]) for y, x0 in crops]).to(device)
        embs.append(F.normalize(model.embed(x), dim=1).cpu().numpy())
        rows += [(i, y, x0) for y, x0 in crops]
    if not embs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 3), int)
    return np.concatenate(embs), np.array(rows, dtype=int)


def view_accuracy(model: EmbedNet, ds: ViewDataset, indices: np.ndarray, device: torch.device) -> float:
    """Share of images whose second view's nearest embedding, among the first views of
    `indices`, is its own first view: how well the embedding recognises an image."""
    model.eval()
    ds.reseed((2**31, 0))  # the same views at every call, none of a training epoch's
    with torch.no_grad():
        views = torch.stack([ds[int(i)]["image"] for i in indices]).to(device)
        a, b = model.embed(views[:, 0]), model.embed(views[:, 1])
    return float(((b @ a.T).argmax(1).cpu() == torch.arange(len(indices))).float().mean())


def train(cfg: EmbedCfg, images: Images, folder: Path, device: torch.device, seed: int) -> tuple[EmbedNet, dict]:
    """Train the embedding network on every image into `folder` (resumable); returns it and
    the fit summary."""
    model = EmbedNet(cfg.model, images.in_channels)
    ds = ViewDataset(images, cfg.size, cfg.train.augment, seed)
    # A fixed sample for the view-retrieval score, drawn apart from the training order.
    probe = np.random.default_rng(seed + 1).choice(len(images), size=min(256, len(images)), replace=False)

    def validate(m) -> dict[str, float]:
        return {"score": view_accuracy(m, ds, probe, device)}

    fit = Fitter(model, embed_task(cfg, validate), cfg.train, folder, device, seed).fit(ds)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model, fit
