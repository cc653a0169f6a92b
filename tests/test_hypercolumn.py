"""The hypercolumn head: all decoder stages, L2-normalised, concatenated, a 1x1 conv."""

from __future__ import annotations

import pytest
import torch

from pipeline.config.blocks import ModelCfg
from pipeline.modeling.hypercolumn import Hypercolumn
from pipeline.modeling.models import build_segmentation

DECODER = [32, 16, 16, 8, 8]


def _cfg(**kw) -> ModelCfg:
    base = dict(arch="Unet", encoder="resnet18", encoder_weights=None, encoder_depth=5, decoder_channels=DECODER)
    return ModelCfg(**{**base, "decoder_attention": None, "dropout": 0.0, "head": None, **kw})


def test_head_reads_every_decoder_stage_and_keeps_outputs():
    torch.manual_seed(0)
    plain = build_segmentation(_cfg(), in_channels=1, aux=True, cls_head=True).eval()
    hyper = build_segmentation(_cfg(head="hypercolumn"), in_channels=1, aux=True, cls_head=True).eval()
    assert isinstance(hyper.net, Hypercolumn) and hyper.net.head.in_channels == sum(DECODER)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a, b = plain(x), hyper(x)
    assert a.keys() == b.keys() == {"mask", "dist", "cls"}
    assert all(a[k].shape == b[k].shape for k in a)
    assert not hyper.net._maps  # no feature map is kept past a forward pass


def test_every_stage_gets_a_gradient():
    """The learned scales get a gradient: the loss reaches the head through every stage."""
    model = build_segmentation(_cfg(head="hypercolumn"), in_channels=1, aux=False)
    model(torch.randn(2, 1, 64, 64))["mask"].mean().backward()
    assert model.net.scales.grad is not None and (model.net.scales.grad != 0).all()
    first = model.net.net.decoder.blocks[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first.parameters())


def test_head_value_and_arch_are_checked(smoke_cfg):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="must be hypercolumn or null"):
        smoke_cfg("segment.model.head=hyper")
    with pytest.raises(ConfigError, match="hypercolumn reads the decoder stages of a Unet, not of FPN"):
        smoke_cfg("segment.model.head=hypercolumn", "segment.model.arch=FPN", "segment.model.decoder_channels=[]")


def test_per_stage_head_equals_the_concatenated_one():
    """forward sums each stage's share of the 1x1 conv at its own resolution, upsampled: the
    same function as upsampling, concatenating and convolving (the definition), only cheaper."""
    torch.manual_seed(1)
    model = build_segmentation(_cfg(head="hypercolumn"), in_channels=1, aux=True).eval()
    with torch.no_grad():
        model.net.scales.uniform_(1.0, 5.0)
        x = torch.randn(2, 1, 64, 64)
        fast, slow = model.net(x), model.net.concat_forward(x)
    assert torch.allclose(fast, slow, atol=1e-4), (fast - slow).abs().max()
