"""Hypercolumn head (the seed's trick: "concatenate feature maps of several sizes, L2-normalised
before the concat"): every decoder stage's features, each L2-normalised per pixel and scaled by
a learned factor (as in ParseNet, so that normalising does not shrink the signal the head
sees), upsampled to the output size, concatenated and predicted by a 1x1 convolution. It
replaces the plain head, which sees only the last decoder stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_SCALE = 10.0  # ParseNet's starting scale for unit-norm features


class Hypercolumn(nn.Module):
    """An smp U-Net whose segmentation head reads all its decoder stages. Output as smp's:
    logits, or (logits, class logits) with an aux classification head."""

    def __init__(self, net: nn.Module, widths: list[int], out_channels: int) -> None:
        super().__init__()
        self.net = net
        # Forward hooks on smp's own decoder blocks rather than a copy of its decoder loop,
        # which changes between smp versions; the plain head is dropped.
        self.net.segmentation_head = nn.Identity()
        self._maps: list[torch.Tensor] = []
        for block in net.decoder.blocks:
            block.register_forward_hook(self._keep)
        self.scales = nn.Parameter(torch.full((len(widths),), INIT_SCALE))
        self.head = nn.Conv2d(sum(widths), out_channels, kernel_size=1)

    def _keep(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._maps.append(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        self._maps = []
        out = self.net(x)
        last, cls = out if isinstance(out, tuple) else (out, None)
        maps, self._maps = self._maps, []
        size = last.shape[-2:]
        # The 1x1 convolution of the concatenated upsampled columns, computed as the sum over
        # stages of each stage's share of it at the stage's own resolution, upsampled: bilinear
        # upsampling and a 1x1 convolution are both linear and commute, so this is the same
        # function, without building a full-resolution map of every stage's channels (which cost
        # 2.5x the plain recipe's training time at 128 px; tests/test_hypercolumn.py checks it).
        weights = torch.split(self.head.weight, [m.shape[1] for m in maps], dim=1)
        logits = None
        for m, s, w in zip(maps, self.scales, weights, strict=True):
            part = F.conv2d(F.normalize(m, dim=1) * s, w)
            if part.shape[-2:] != size:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            logits = part if logits is None else logits + part
        logits = logits + self.head.bias.view(1, -1, 1, 1)
        return logits if cls is None else (logits, cls)

    def concat_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The head as its definition reads (upsample, concatenate, 1x1 convolution), for the
        test that forward computes the same."""
        self._maps = []
        last = self.net(x)
        last = last[0] if isinstance(last, tuple) else last
        maps, self._maps = self._maps, []
        columns = [
            F.interpolate(F.normalize(m, dim=1) * s, size=last.shape[-2:], mode="bilinear", align_corners=False)
            for m, s in zip(maps, self.scales, strict=True)
        ]
        return self.head(torch.cat(columns, dim=1))
