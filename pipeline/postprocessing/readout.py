"""The foreground readout of K exclusive classes (ensemble.readout: foreground).

A softmax over background + K classes can find a defect yet not its type: inside a magnetic-tile
blowhole the foreground (1 - background) was 0.54 while each of the five classes held 0.07 to
0.21, so no class map passed a threshold. The readout splits the two questions, as the
segmentation-then-classification recipes of the steel and clouds competitions do: each
connected region of foreground >= FOREGROUND is one defect; its class is the one whose
probability mass inside it is largest (times the image classifier's probability of the class,
when there is one: two independent opinions multiplied); that class's map takes the region's
foreground, the others are 0 there. Pixels outside every region keep their class probabilities."""

from __future__ import annotations

import cv2
import numpy as np

# Low, so that a weak defect is one region (a blowhole's foreground was 0.54 at its centre and
# fades at its rim); the scorer's threshold on the readout map still decides each pixel.
FOREGROUND = 0.2


def foreground_readout(prob: np.ndarray, cls: np.ndarray | None = None) -> np.ndarray:
    """(h, w, K) class probabilities of one image -> (h, w, K) with each foreground region
    given to one class; `cls` (K,) image-level probabilities weigh the vote (None or NaN: not)."""
    fg = prob.sum(axis=-1)
    n, labels = cv2.connectedComponents((fg >= FOREGROUND).astype(np.uint8), connectivity=8)
    if n <= 1:
        return prob
    k = prob.shape[-1]
    flat = labels.reshape(-1)
    mass = np.stack([np.bincount(flat, weights=prob[..., c].reshape(-1), minlength=n) for c in range(k)], axis=1)
    prior = np.ones(k) if cls is None or np.isnan(cls).any() else np.asarray(cls, dtype=np.float64)
    winner = np.argmax(mass * prior, axis=1)  # (n,): the class of each region (row 0, outside, unused)
    inside = labels > 0
    out = prob.copy()
    out[inside] = 0
    out[inside, winner[labels[inside]]] = fg[inside]
    return out


def readout_image(mode: str, prob: np.ndarray, cls: np.ndarray | None) -> np.ndarray:
    """One image's map as ensemble.readout says: unchanged (classes, or one binary class), or
    its foreground readout (foreground) with its classifier probabilities `cls` ((K,), or NaN)."""
    if mode != "foreground" or prob.ndim != 3:
        return prob
    cls = None if cls is None or np.size(cls) != prob.shape[-1] else np.asarray(cls, dtype=np.float64)
    return foreground_readout(prob, cls)
