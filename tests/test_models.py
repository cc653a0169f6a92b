"""Models, offline encoder weights, losses, the auxiliary distance head and input geometry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import loader as config
from pipeline.config.blocks import LossPhase, ModelCfg
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore, write_store
from pipeline.data.geometry import Geometry, to_tensor
from pipeline.inference.predict import InferSpec, adapt_bn, predict
from pipeline.modeling.losses import LOSSES, ScheduledLoss, distance_loss, get_loss
from pipeline.modeling.models import build_segmentation
from pipeline.modeling.pretrained import LITE_PACKAGES, lite_state_dict
from pipeline.training.segmentation import build_model, seg_task

REPO = Path(__file__).resolve().parent.parent
LITE0 = "tu-efficientnet_lite0"
SMALL_DECODER = [32, 16, 16, 8, 8]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model_cfg(**kw) -> ModelCfg:
    base = {
        "arch": "Unet",
        "encoder": LITE0,
        "encoder_weights": "lite",
        "encoder_depth": 5,
        "decoder_channels": SMALL_DECODER,
        "decoder_attention": None,
        "dropout": 0.0,
        "head": None,
    }
    return ModelCfg(**{**base, **kw})


@pytest.fixture(scope="module")
def smoke():
    """configs/smoke.yaml as is (no data needed: nothing here reads files)."""
    return config.load(REPO / "configs" / "smoke.yaml", ["segment.train.bf16='off'", "segment.train.channels_last=false"])


# ----------------------------------------------------------------------------- offline lite weights


@pytest.mark.parametrize("channels", [1, 3])
def test_lite_weights_fill_every_encoder_tensor(channels):
    model = build_segmentation(_model_cfg(), in_channels=channels, aux=True)
    enc = model.net.encoder.state_dict()
    src = lite_state_dict(LITE0)
    assert len(enc) == len(src)
    stems = 0
    for (src_key, value), (dst_key, got) in zip(src.items(), enc.items(), strict=True):
        expected = value
        if value.dim() == 4 and value.shape[1] == 3 and got.shape[1] != 3:
            expected = value.sum(dim=1, keepdim=True)  # 1-channel stem: summed over RGB
            stems += 1
        assert got.shape == expected.shape, (src_key, dst_key)
        assert torch.equal(got, expected.to(got.dtype)), (src_key, dst_key)
    assert stems == (1 if channels == 1 else 0)
    assert next(iter(enc)).endswith("conv_stem.weight")
    assert enc[next(iter(enc))].shape[1] == channels


def test_lite_weights_differ_from_random_init():
    torch.manual_seed(0)
    lite = build_segmentation(_model_cfg(), in_channels=1, aux=False).net.encoder.state_dict()
    torch.manual_seed(0)
    rand = build_segmentation(_model_cfg(encoder_weights=None), in_channels=1, aux=False).net.encoder.state_dict()
    weights = [k for k, v in rand.items() if k.endswith("weight") and v.dim() == 4]
    assert weights
    differ = [k for k in weights if not torch.equal(lite[k], rand[k])]
    assert differ == weights


def test_lite_weights_with_other_encoder_list_valid_encoders():
    with pytest.raises(UserError) as err:
        build_segmentation(_model_cfg(encoder="resnet18"), in_channels=1, aux=False)
    msg = str(err.value)
    assert "resnet18" in msg
    for name in LITE_PACKAGES:
        assert name in msg


def test_unknown_arch_gets_smps_own_error():
    import segmentation_models_pytorch as smp

    with pytest.raises(UserError) as err:
        build_segmentation(_model_cfg(arch="UNetX", encoder_weights=None), in_channels=1, aux=False)
    msg = str(err.value)
    assert msg.startswith("segment.model.arch: Wrong architecture type `UNetX`")
    assert all(name in msg for name in smp.MODEL_ARCHITECTURES_MAPPING)


@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus", "FPN", "Linknet", "MAnet", "PAN", "DeepLabV3Plus"])
def test_smp_factory_builds_the_same_network_as_the_class(arch):
    """smp.create_model in place of the hand-kept class list: the same weights from one seed."""
    import segmentation_models_pytorch as smp

    channels = SMALL_DECODER if arch in ("Unet", "UnetPlusPlus", "MAnet") else []
    torch.manual_seed(3)
    built = build_segmentation(_model_cfg(arch=arch, encoder_weights=None, decoder_channels=channels), in_channels=1, aux=True).net
    torch.manual_seed(3)
    kw = {"decoder_channels": channels} if channels else {}
    direct = getattr(smp, arch)(encoder_name=LITE0, encoder_weights=None, in_channels=1, classes=2, encoder_depth=5, **kw)
    a, b = built.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_preflight_refuses_an_arch_that_predicts_below_the_input_size(smoke_cfg):
    from pipeline import preflight

    cfg = smoke_cfg("segment.model.arch=PSPNet", "segment.model.decoder_channels=[]", "segment.model.encoder_weights=null")
    with pytest.raises(UserError, match=r"PSPNet predicts \d+x\d+ maps for 32x32 inputs; the pipeline needs maps of the input.s size"):
        preflight.check(cfg)


def test_scse_decoder_attention_adds_attention_blocks():
    wide = [64, 32, 16, 16, 16]
    plain = build_segmentation(_model_cfg(encoder_weights=None, decoder_channels=wide), in_channels=1, aux=False)
    scse = build_segmentation(_model_cfg(encoder_weights=None, decoder_channels=wide, decoder_attention="scse"), in_channels=1, aux=False)
    n_params = [sum(p.numel() for p in m.parameters()) for m in (plain, scse)]
    assert n_params[1] > n_params[0]
    assert any("SCSE" in type(m).__name__ for m in scse.modules())
    assert not any("SCSE" in type(m).__name__ for m in plain.modules())
    assert scse(torch.zeros(2, 1, 64, 64))["mask"].shape == (2, 1, 64, 64)


def test_scse_with_a_decoder_narrower_than_16_is_refused():
    with pytest.raises(UserError, match="decoder_channels of at least 16"):
        build_segmentation(_model_cfg(encoder_weights=None, decoder_attention="scse"), in_channels=1, aux=False)


def test_decoder_attention_on_an_arch_without_it_is_refused():
    with pytest.raises(UserError, match="FPN has no decoder attention"):
        build_segmentation(_model_cfg(arch="FPN", encoder_weights=None, decoder_attention="scse"), in_channels=1, aux=False)


def test_decoder_attention_on_the_classifier_is_refused():
    from pipeline.modeling.models import ClassifierNet

    with pytest.raises(UserError, match="the classifier has no decoder"):
        ClassifierNet(_model_cfg(arch="classifier", encoder_weights=None, decoder_attention="scse"), in_channels=1)


def test_decoder_attention_value_is_checked(smoke_cfg):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="decoder_attention must be scse or null"):
        smoke_cfg("segment.model.decoder_attention=cbam")


# ----------------------------------------------------------------------------- losses


def test_unknown_loss_lists_valid_losses():
    with pytest.raises(UserError) as err:
        get_loss("nope")
    msg = str(err.value)
    assert "nope" in msg
    for name in LOSSES:
        assert name in msg


def _logits_target(seed: int = 0, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 16, 16, generator=g, requires_grad=grad)
    target = (torch.rand(3, 1, 16, 16, generator=g) > 0.6).float()
    target[2] = 0  # an empty mask too
    return logits, target


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_is_selectable_and_finite(name):
    logits, target = _logits_target(grad=True)
    value = get_loss(name)(logits, target)
    assert value.dim() == 0 and torch.isfinite(value)
    total, parts = ScheduledLoss([LossPhase(0, {name: 2.0})])(logits, target, epoch=0)
    assert set(parts) == {name}
    assert total.dim() == 0 and torch.isfinite(total)
    assert float(total.detach()) == pytest.approx(2.0 * parts[name], rel=1e-5)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_scheduled_loss_picks_phase_by_epoch():
    loss = ScheduledLoss([LossPhase(2, {"bce": 1.0, "dice": 0.5}), LossPhase(0, {"lovasz": 1.0})])
    logits, target = _logits_target(1)
    for epoch, keys in [(0, {"bce", "dice"}), (1, {"bce", "dice"}), (2, {"lovasz"}), (7, {"lovasz"})]:
        total, parts = loss(logits, target, epoch)
        assert set(parts) == keys, epoch
        expected = parts["bce"] + 0.5 * parts["dice"] if "bce" in keys else parts["lovasz"]
        assert float(total) == pytest.approx(expected, rel=1e-5)


def test_scheduled_loss_zero_weight_term_is_skipped():
    total, parts = ScheduledLoss([LossPhase(0, {"bce": 1.0, "dice": 0.0})])(*_logits_target(), epoch=0)
    assert set(parts) == {"bce"}


# ----------------------------------------------------------------------------- aux head


def _seg_cfg(smoke, weight: float):
    return dataclasses.replace(smoke.segment, aux=dataclasses.replace(smoke.segment.aux, weight=weight))


def test_aux_head_adds_a_dist_output(smoke):
    torch.manual_seed(0)
    with_aux = build_model(_seg_cfg(smoke, 0.5), 1).eval()
    without = build_model(_seg_cfg(smoke, 0.0), 1).eval()
    assert with_aux.net.segmentation_head[0].out_channels == 2
    assert without.net.segmentation_head[0].out_channels == 1
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        a, b = with_aux(x), without(x)
    assert set(a) == {"mask", "dist"} and set(b) == {"mask"}
    assert a["mask"].shape == a["dist"].shape == b["mask"].shape == (2, 1, 32, 32)


def test_aux_weight_changes_the_task_loss(smoke):
    torch.manual_seed(0)
    model = build_model(_seg_cfg(smoke, 0.5), 1).eval()
    x = torch.randn(2, 1, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:20] = 1
    dist = torch.rand(2, 1, 32, 32) * mask
    batch = {"image": x, "mask": mask, "dist": dist}
    with torch.no_grad():
        out = model(x)
    t0, p0 = seg_task(_seg_cfg(smoke, 0.0), None).loss(out, batch, 0)
    t5, p5 = seg_task(_seg_cfg(smoke, 0.5), None).loss(out, batch, 0)
    assert "dist" not in p0 and "dist" in p5
    d = distance_loss(out["dist"], dist, smoke.segment.aux.signed)
    assert float(d) > 0
    assert float(t5) != pytest.approx(float(t0))
    assert float(t5) == pytest.approx(float(t0) + 0.5 * float(d), rel=1e-5)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("shape", [(101, 101, 1), (90, 101, 1), (101, 77, 3)])
def test_pad_roundtrip_is_identity(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    geo = Geometry("pad", 128)
    fwd = geo.forward(img)
    assert fwd.shape == (128, 128, shape[2])
    for c in range(shape[2]):
        np.testing.assert_array_equal(geo.backward(fwd[..., c], *shape[:2]), img[..., c])


def test_resize_backward_returns_original_size():
    img = np.random.default_rng(0).integers(0, 256, (101, 83, 1), dtype=np.uint8)
    geo = Geometry("resize", 32)
    fwd = geo.forward(img)
    assert fwd.shape == (32, 32, 1)
    assert geo.backward(fwd[..., 0].astype(np.float32), 101, 83).shape == (101, 83)


class PointwiseNet(nn.Module):
    """A 1x1 conv: its output at a pixel depends only on that pixel, so tiling, padding and
    flip TTA must reproduce sigmoid(conv(image)) exactly at the original size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.5)
            self.conv.bias.fill_(-0.2)

    def forward(self, x):
        y = self.conv(x)
        return {"mask": y, "cls": y.mean(dim=(1, 2, 3))}


def _store(tmp_path: Path, images: list[np.ndarray]) -> ArrayStore:
    write_store(tmp_path, "imgs", ((f"im{i}", a) for i, a in enumerate(images)))
    return ArrayStore(tmp_path, "imgs")


@pytest.mark.parametrize("mode,size,overlap", [("tile", 64, 16), ("tile", 48, 0), ("pad", 128, 0), ("pad", 32, 0)])
def test_predict_returns_original_size(tmp_path, smoke, mode, size, overlap):
    rng = np.random.default_rng(1)
    shapes = [(150, 170), (101, 101), (40, 64)] if mode == "tile" else [(101, 101), (90, 77)]
    if mode == "pad" and size == 32:
        shapes = [(32, 20)]
    images = [rng.integers(0, 256, (*s, 1), dtype=np.uint8) for s in shapes]
    store = _store(tmp_path, images)
    model = PointwiseNet()
    out = dict(
        predict(
            model,
            store,
            np.arange(len(store)),
            InferSpec(Geometry(mode, size), ["none", "hflip"], torch.device("cpu"), smoke.segment.train, overlap=overlap),
        )
    )
    assert sorted(out) == list(range(len(store)))
    for i, img in enumerate(images):
        got = out[i]["mask"]
        assert got.shape == img.shape[:2]
        assert ((got >= 0) & (got <= 1)).all()
        with torch.no_grad():
            expected = torch.sigmoid(model.conv(to_tensor(img)[None]))[0, 0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert isinstance(out[i]["cls"], float)


def test_pad_geometry_refuses_images_larger_than_size():
    with pytest.raises(UserError):
        Geometry("pad", 64).forward(np.zeros((101, 101, 1), np.uint8))


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_tiled_predict_same_result_for_any_batch_size(tmp_path, smoke, batch_size):
    # Tiles of several images share a batch; the split back per image must not mix them up.
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (*s, 1), dtype=np.uint8) for s in [(150, 170), (40, 64), (101, 101), (70, 200)]]
    store = _store(tmp_path, images)
    torch.manual_seed(0)
    model = PointwiseNet()

    def run(bs: int) -> dict:
        return dict(
            predict(
                model,
                store,
                np.arange(len(store)),
                InferSpec(Geometry("tile", 48), ["none"], torch.device("cpu"), smoke.segment.train, overlap=16, tile_batch=bs),
            )
        )

    ref, got = run(1), run(batch_size)
    assert sorted(got) == list(range(len(images)))
    for i in ref:
        np.testing.assert_allclose(got[i]["mask"], ref[i]["mask"], atol=1e-6)
        assert got[i]["cls"] == pytest.approx(ref[i]["cls"], abs=1e-6)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return {"mask": self.bn(x)}


@pytest.mark.parametrize("mode,size", [("pad", 128), ("tile", 48)])
def test_adapt_bn_estimates_statistics_on_the_target_images(tmp_path, mode, size):
    rng = np.random.default_rng(3)
    # a shifted domain: intensities around 200, far from the untrained statistics (mean 0, var 1)
    images = [rng.normal(200, 10, (101, 101, 1)).clip(0, 255).astype(np.uint8) for _ in range(8)]
    store = _store(tmp_path, images)
    model = BNNet().eval()
    adapted = adapt_bn(model, store, Geometry(mode, size), torch.device("cpu"), overlap=16 if mode == "tile" else 0, batch_size=4)
    assert model.bn.running_mean.item() == 0.0 and model.bn.running_var.item() == 1.0  # original untouched
    assert not adapted.training
    target = torch.stack([to_tensor(im) for im in images])
    assert adapted.bn.running_mean.item() == pytest.approx(float(target.mean()), rel=0.01)
    assert adapted.bn.running_var.item() == pytest.approx(float(target.var()), rel=0.15)
