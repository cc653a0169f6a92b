"""Datasets over the ingest stores: geometry (pad / resize / tile), augmentation from
config, the distance-transform target and the oversampling weights."""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.config.fields import OVERSAMPLE_KEYS
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore
from pipeline.data.geometry import Geometry, to_tensor
from pipeline.data.multiclass import unpack

# Coverage bins for oversampling: empty, small (<10%), medium (<50%), large.
COVERAGE_EDGES = (0.0, 0.1, 0.5)


def coverage_bin(coverage: np.ndarray) -> np.ndarray:
    """Names of the oversampling bins for each coverage value."""
    cov = np.asarray(coverage, dtype=float)
    return np.select(
        [cov <= 0, cov < COVERAGE_EDGES[1], cov < COVERAGE_EDGES[2]],
        ["empty", "small", "medium"],
        "large",
    )


def sample_weights(coverage: np.ndarray, weights: dict[str, float], presence: np.ndarray | None = None) -> np.ndarray:
    """Per-image sampling weight from the configured per-bin weights, times the rare-class
    weights (`rare_class`) when the images' class presence (n, K) is given."""
    unknown = set(weights) - set(OVERSAMPLE_KEYS)
    if unknown:
        raise UserError(f"train.oversample: unknown bin {sorted(unknown)[0]!r}; valid: {', '.join(OVERSAMPLE_KEYS)}")
    bins = coverage_bin(coverage)
    out = np.array([weights.get(b, 1.0) for b in bins], dtype=np.float64)
    if presence is not None and weights.get("rare_class", 0.0) > 0:
        out[: len(presence)] *= rare_class_weights(presence, weights["rare_class"])
    return out


def rare_class_weights(presence: np.ndarray, power: float) -> np.ndarray:
    """K classes: an image holding classes is drawn (most / n_rarest) ** power times as often,
    where n_rarest counts the images of its rarest present class and most those of the most
    common class (images without a class: 1). Counted over the images given: the training part."""
    presence = np.asarray(presence, dtype=bool)
    counts = presence.sum(axis=0).astype(float)
    rarest = np.where(presence, counts, np.inf).min(axis=1)
    ratio = np.where(np.isfinite(rarest), counts.max() / np.maximum(rarest, 1.0), 1.0)
    return ratio**power


def build_augment(specs: list[dict], seed: int) -> A.Compose | None:
    """albumentations pipeline from a list of {name: Transform, **kwargs}; the seed is required
    because an unseeded pipeline draws from its own entropy and breaks reproducibility."""
    transforms = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        cls = getattr(A, str(name), None)
        if cls is None or not isinstance(cls, type):
            raise UserError(f"train.augment: unknown albumentations transform {name!r}")
        try:
            transforms.append(cls(**spec))
        except (TypeError, ValueError) as exc:  # albumentations 2 validates arguments with pydantic (a ValueError)
            raise UserError(f"train.augment: {name}: {' '.join(str(exc).split())[:300]}") from exc
    # albumentations 2 keeps its own RNG and ignores numpy's global seed.
    return A.Compose(transforms, seed=seed) if transforms else None


def distance_target(mask: np.ndarray, signed: bool) -> np.ndarray:
    """Distance to the background inside the foreground, scaled to [0, 1] per image;
    signed adds minus the (scaled) distance to the foreground outside it."""
    m = (mask > 0).astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    out = inside / inside.max() if inside.max() > 0 else inside
    if signed and m.any() and not m.all():
        outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
        out = out - outside / outside.max()
    return out.astype(np.float32)


def crop_batch(batch: dict[str, torch.Tensor], size: int, rngs: Sequence[np.random.Generator]) -> dict[str, torch.Tensor]:
    """Each sample's random same-scale `size` window, drawn from its own generator in `rngs`
    (progressive resizing). The distance target is cropped, not recomputed: it stays what the
    whole input asks of those pixels; the label and coverage describe the window, which is all
    the network sees."""
    full = batch["image"].shape[-1]
    corners = [rng.integers(0, full - size + 1, 2) for rng in rngs]
    out = dict(batch)
    for k in ("image", "mask", "dist"):
        if k in batch:
            out[k] = torch.stack([t[:, y : y + size, x : x + size] for t, (y, x) in zip(batch[k], corners, strict=True)])
    hard = out["mask"] > 0.5
    out["label"] = (hard.flatten(1).any(1) if hard.shape[1] == 1 else hard.flatten(2).any(2)).float()
    out["coverage"] = out["mask"].flatten(1).mean(1)
    return out


class SegDataset(Dataset):
    """Training/validation samples: image, mask, distance target, label and coverage.

    In tile mode, training takes one random `size` crop per image (tiles with foreground
    preferred half of the time, since defects are small), or the fixed crop at `crops[i]`
    (y, x) when given (an image may then appear once per patch); inference tiles separately."""

    def __init__(
        self,
        images: ArrayStore,
        masks: ArrayStore | None,
        indices: np.ndarray,
        geometry: Geometry,
        augment: A.Compose | None = None,
        signed: bool = False,
        seed: int = 0,
        soft: bool = False,
        crops: np.ndarray | None = None,
        classes: int = 1,
    ) -> None:
        self.images, self.masks, self.indices = images, masks, np.asarray(indices)
        self.classes = classes  # K > 1: the stored mask packs class k in bit k (pipeline.data.multiclass)
        self.geometry, self.augment, self.signed, self.soft = geometry, augment, signed, soft
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.crops = crops

    def reseed(self, key: Sequence[int]) -> None:
        """Make the next sample's random draws (crop and augmentation) a function of (seed, key)
        alone. The training loader calls this per sample with (epoch, position in the epoch), so
        a sample does not depend on which DataLoader worker loads it (each worker holds its own
        copy of this dataset, and so of its generators) nor on the samples drawn before it (a
        resumed run draws what an uninterrupted one drew, with no generator state to save)."""
        crop, aug, aug_py = np.random.SeedSequence([self.seed % 2**64, *key]).spawn(3)
        self.rng = np.random.default_rng(crop)
        if self.augment is not None:
            # One numpy and one Python generator shared by all transforms: albumentations'
            # set_random_seed would give every transform its own copy of the same stream.
            py_seed = int(aug_py.generate_state(1, np.uint64)[0])
            self.augment.set_random_state(np.random.default_rng(aug), random.Random(py_seed))

    def __len__(self) -> int:
        return len(self.indices)

    def _crop(self, img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.geometry.size
        h, w = img.shape[:2]
        if h <= s and w <= s:
            return img, mask
        # Foreground in any class plane (soft labels hold p x 255, K planes for K classes).
        fg = (mask > 127 if self.soft else mask > 0).any(axis=-1)
        if fg.any() and self.rng.random() < 0.5:
            ys, xs = np.nonzero(fg)
            k = self.rng.integers(len(ys))
            y0 = int(np.clip(ys[k] - s // 2, 0, max(h - s, 0)))
            x0 = int(np.clip(xs[k] - s // 2, 0, max(w - s, 0)))
        else:
            y0, x0 = (
                int(self.rng.integers(max(h - s, 0) + 1)),
                int(self.rng.integers(max(w - s, 0) + 1)),
            )
        return img[y0 : y0 + s, x0 : x0 + s], mask[y0 : y0 + s, x0 : x0 + s]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = int(self.indices[i])
        img = np.asarray(self.images[idx])
        mask = np.asarray(self.masks[idx]) if self.masks is not None else np.zeros((*img.shape[:2], 1), np.uint8)
        if self.crops is not None:
            y0, x0 = (int(v) for v in self.crops[i])
            s = self.geometry.size
            img, mask = img[y0 : y0 + s, x0 : x0 + s], mask[y0 : y0 + s, x0 : x0 + s]
        elif self.geometry.mode == "tile":
            img, mask = self._crop(img, mask)
        img = self.geometry.forward(img)
        mask = self.geometry.forward(mask, cv2.INTER_NEAREST)
        if self.augment is not None:
            res = self.augment(image=img, mask=mask)
            img, mask = res["image"], res["mask"]
            img = img[..., None] if img.ndim == 2 else img
            mask = mask[..., None] if mask.ndim == 2 else mask
        if self.classes > 1:
            return self._classes_sample(img, mask, idx)
        # Soft (pseudo) masks hold p x 255; hard masks hold 0/1.
        m = mask[..., 0].astype(np.float32) / 255.0 if self.soft else (mask[..., 0] > 0).astype(np.float32)
        return {
            "image": to_tensor(img),
            "mask": torch.from_numpy(m)[None],
            "dist": torch.from_numpy(distance_target(m > 0.5, self.signed))[None],
            "label": torch.tensor(float((m > 0.5).any())),
            "coverage": torch.tensor(float(m.mean())),
            "index": torch.tensor(idx),
        }

    def _classes_sample(self, img: np.ndarray, mask: np.ndarray, idx: int) -> dict[str, torch.Tensor]:
        """A K-class sample: the packed mask (resized and augmented as one nearest-neighbour
        plane, so its bits stay class bits) unpacked into K planes, or a soft pseudo-label's K
        planes (p x 255 each); a distance map per class."""
        if self.soft:
            planes = np.moveaxis(mask, -1, 0).astype(np.float32) / 255.0
        else:
            planes = unpack(mask[..., 0], self.classes).astype(np.float32)
        return {
            "image": to_tensor(img),
            "mask": torch.from_numpy(planes),
            "dist": torch.from_numpy(np.stack([distance_target(p > 0.5, self.signed) for p in planes])),
            "label": torch.from_numpy((planes.reshape(self.classes, -1).max(axis=1) > 0.5).astype(np.float32)),  # per class
            "coverage": torch.tensor(float((planes.max(axis=0) > 0.5).mean())),
            "index": torch.tensor(idx),
        }
