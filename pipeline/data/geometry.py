"""Network input geometry (pad / resize / tile) and normalisation: how an image of any size
becomes a network input and a prediction goes back to the image's size. Inference-only code
(the offline bundle carries it) shares these with training."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipeline.config.blocks import InputCfg
from pipeline.core.errors import UserError

# ImageNet statistics; a grayscale stem summed over RGB sees the mean of the three.
MEAN = {1: (0.449,), 3: (0.485, 0.456, 0.406)}
STD = {1: (0.226,), 3: (0.229, 0.224, 0.225)}


@dataclass(frozen=True)
class Geometry:
    """How an image of any size becomes a fixed-size network input, and back."""

    mode: str
    size: int

    @classmethod
    def from_cfg(cls, cfg: InputCfg) -> Geometry:
        if cfg.mode == "pad" and cfg.size % 32:
            raise UserError(f"input.size: {cfg.size} must be a multiple of 32 for mode 'pad'")
        return cls(cfg.mode, cfg.size)

    def forward(self, img: np.ndarray, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
        """HxWxC -> SxSxC (pad mode reflects around the centre; resize scales)."""
        h, w = img.shape[:2]
        if self.mode == "resize":
            out = cv2.resize(img, (self.size, self.size), interpolation=interp)
            return out[..., None] if out.ndim == 2 else out
        # pad: exactly size x size; tile: each side at least `size` (the window slides over the rest).
        th, tw = (self.size, self.size) if self.mode == "pad" else (max(self.size, h), max(self.size, w))
        if h > th or w > tw:
            raise UserError(f"input.size {self.size} is smaller than an image of {h}x{w}; use mode resize or tile")
        top, left = (th - h) // 2, (tw - w) // 2
        out = cv2.copyMakeBorder(img, top, th - h - top, left, tw - w - left, cv2.BORDER_REFLECT_101)
        return out[..., None] if out.ndim == 2 else out

    def backward(self, prob: np.ndarray, h: int, w: int) -> np.ndarray:
        """Network-size map (S,S) -> the image's original (h, w)."""
        if self.mode == "resize":
            return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        s = prob.shape[0]
        top, left = (s - h) // 2, (s - w) // 2
        return prob[top : top + h, left : left + w]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWxC -> normalised float CxHxW."""
    c = img.shape[2]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(MEAN[1 if c == 1 else 3][:c] if c <= 3 else [0.45] * c).view(-1, 1, 1)
    std = torch.tensor(STD[1 if c == 1 else 3][:c] if c <= 3 else [0.225] * c).view(-1, 1, 1)
    return (x - mean) / std
