"""K classes through the stages (multiclass softmax from label images, multilabel sigmoids from
a steel-layout RLE CSV), the sub-class trick on one binary class, and the pieces they rest on:
config rules, loss modes, network outputs, per-class choices, features, long submissions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST, SMOKE_CFG

from pipeline.config import loader as config
from pipeline.config.blocks import LossPhase
from pipeline.core import paths
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.store import ArrayStore
from pipeline.data.classrows import flat, keys, stack, truth_planes
from pipeline.data.datasets import SegDataset
from pipeline.data.geometry import Geometry
from pipeline.data.longrle import IMAGE_LABEL, to_frame
from pipeline.data.multiclass import Classes, pack
from pipeline.demo import multiclass as demo_multiclass
from pipeline.engine import cache
from pipeline.inference.predict import squash
from pipeline.modeling.losses import ScheduledLoss, class_index
from pipeline.modeling.models import build_segmentation
from pipeline.postprocessing.features import feature_table
from pipeline.postprocessing.policy import choose
from pipeline.stages import GRAPH
from pipeline.submission.long import make_long_submission

CLASSES = ["stripes", "speckle", "dark"]
NO_CLS = np.full(4, np.nan)


def _cfg(*overrides: str):
    return config.load(SMOKE_CFG, [*FAST, *overrides])


# ----------------------------------------------------------------------------- config rules


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.classes=[a, b]"], "segment.target: got binary with 2 data.classes"),
        (["segment.target=multilabel"], "segment.target: got multilabel, which needs data.classes"),
        (["data.classes=[a, b]", "segment.target=multiclass"], "needs data.exclusive: true"),
        (["data.classes=[a]"], "data.classes: got one class"),
        (
            ["data.classes=[a, b]", "data.exclusive=true", "segment.target=multiclass", "pseudo.soft=true", "classify.source=seg_head"],
            "pseudo.soft: got true with segment.target multiclass",
        ),
        (
            ["data.classes=[a, b]", "segment.target=multilabel", "ensemble.readout=foreground"],
            "ensemble.readout: got foreground, which gives each defect one class and needs segment.target: multiclass",
        ),
        (["data.classes=[a, b]", "data.train_masks={b: x, a: y}"], "data.train_masks: folders for b, a"),
        (["segment.subclasses={by: size, n: 3}"], "segment.subclasses: pseudo-labels"),
        (["segment.subclasses={by: area, n: 3}"], "segment.subclasses.by: got 'area'"),
    ],
)
def test_class_config_problems(overrides, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        _cfg(*overrides)


def test_new_keys_at_their_defaults_keep_every_stage_key():
    plain = _cfg()
    spelled = _cfg("segment.target=binary", "data.classes=[]", "data.exclusive=false", "segment.subclasses=null")
    keys_plain = {s: GRAPH.stage_key(plain, s) for s in GRAPH.stages}
    assert keys_plain == {s: GRAPH.stage_key(spelled, s) for s in GRAPH.stages}
    sub = _cfg("segment.subclasses={by: size, n: 2}", "pseudo.rounds=0", "ensemble.models=[segment]")
    base = _cfg("pseudo.rounds=0", "ensemble.models=[segment]")
    assert GRAPH.stage_key(sub, "segment") != GRAPH.stage_key(base, "segment")
    assert GRAPH.stage_key(sub, "folds") == GRAPH.stage_key(base, "folds")


# ----------------------------------------------------------------------------- training pieces


def test_softmax_network_outputs_and_losses():
    cfg = _cfg().segment.model
    net = build_segmentation(cfg, 1, aux=True, classes=3, softmax=True).eval()
    out = net(torch.zeros(2, 1, 32, 32))
    assert out["mask"].shape == (2, 4, 32, 32) and out["dist"].shape == (2, 3, 32, 32)
    target = torch.zeros(2, 3, 32, 32)
    target[0, 1, :8] = 1
    target[1, 2, 8:] = 1
    idx = class_index(target)
    assert idx[0, 0, 0] == 2 and idx[1, 9, 0] == 3 and idx[0, 20, 0] == 0
    for mode, logits in (("multiclass", out["mask"]), ("multilabel", out["mask"][:, 1:])):
        loss = ScheduledLoss([LossPhase(0, {"bce": 1.0, "dice": 1.0, "lovasz": 0.5})], mode)
        total, parts = loss(logits, target, 0)
        assert torch.isfinite(total) and set(parts) == {"bce", "dice", "lovasz"}


def test_squash_splits_or_merges_a_softmax():
    logits = torch.randn(2, 4, 5, 5)
    per_class = squash("mask", logits, softmax=True)
    merged = squash("mask", logits, softmax=True, merge=True)
    background = torch.softmax(logits, 1)[:, :1]
    assert per_class.shape == (2, 3, 5, 5)
    torch.testing.assert_close(merged, 1 - background)
    assert squash("dist", torch.randn(2, 3, 5, 5), merge=True).shape == (2, 1, 5, 5)


def test_dataset_unpacks_classes_and_a_distance_map_each():
    planes = np.zeros((3, 16, 16), np.uint8)
    planes[0, :4, :4] = 1
    planes[2, 8:, 8:] = 1
    masks = {0: pack(planes)[..., None]}
    images = {0: np.zeros((16, 16, 1), np.uint8)}
    item = SegDataset(images, masks, np.array([0]), Geometry("resize", 16), classes=3)[0]
    assert item["mask"].shape == (3, 16, 16) and item["dist"].shape == (3, 16, 16)
    np.testing.assert_array_equal(item["mask"].numpy(), planes)
    assert item["dist"][1].max() == 0 and item["dist"][2].max() == 1 and item["label"].tolist() == [1, 0, 1]


def test_rows_round_trip():
    maps = [np.random.default_rng(0).random((4, 5, 3)) for _ in range(2)]
    rows = flat(maps)
    assert len(rows) == 6 and all(a.shape == (4, 5) for a in rows)
    np.testing.assert_array_equal(stack(rows, 3)[1], maps[1])
    assert keys(["a", "b"], ["x", "y"]) == ["a_x", "a_y", "b_x", "b_y"] and keys(["a"], []) == ["a"]
    packed = pack(np.stack([np.eye(3), np.zeros((3, 3)), np.ones((3, 3))]).astype(np.uint8))
    assert [t.sum() for t in truth_planes(packed, 3)] == [3, 0, 9]


def test_choose_a_candidate_per_class():
    # Rows alternate class 0, class 1; class 0 scores best with candidate 1, class 1 with 0.
    fit = np.array([[0.2, 0.9], [0.8, 0.1], [0.3, 0.7], [0.9, 0.2]])
    row_class = np.array([0, 1, 0, 1])
    assert choose("grid", 4, None, fit).tolist() == [0, 0, 0, 0]  # one candidate for both classes
    assert choose("grid", 4, None, fit, classes=(row_class, row_class)).tolist() == [1, 0, 1, 0]
    pred = np.array([[0.1, 0.2], [0.5, 0.4], [0.1, 0.3], [0.6, 0.1]])
    assert choose("global", 4, pred, fit, classes=(row_class, row_class)).tolist() == [1, 0, 1, 0]


def test_class_rows_features_never_read_the_labels_coverage():
    ids = ["a", "b"]
    probs = [np.full((8, 8, 2), 0.2), np.full((8, 8, 2), 0.9)]
    meta = pd.DataFrame({"id": ids, "coverage": [0.1, 0.2], "coverage_x": [0.0, 0.3], "depth": [5.0, 7.0], "empty": [0, 0]})
    images = {i: np.zeros((8, 8, 1), np.uint8) for i in ids}
    table = feature_table(ids, probs, None, images, np.array([np.nan, 0.1, np.nan, 0.7]), meta, ("x", "y"))
    assert table.index.tolist() == ["a_x", "a_y", "b_x", "b_y"]
    assert table["class"].tolist() == [0, 1, 0, 1] and table["meta_depth"].tolist() == [5.0, 5.0, 7.0, 7.0]
    assert not [c for c in table.columns if "coverage" in c or c == "meta_empty"]


# ----------------------------------------------------------------------------- long submissions


def _params(n_rows: int, threshold: float = 0.5, min_area: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"threshold": [threshold] * n_rows, "min_area": [min_area] * n_rows, "gate": [0.0] * n_rows})


def test_long_submission_follows_the_sample(tmp_path):
    classes = Classes(("x", "y"), exclusive=True)
    sample = tmp_path / "sample.csv"
    to_frame(IMAGE_LABEL, {}, ["b.jpg", "a.jpg"], classes).to_csv(sample, index=False)
    prob = np.zeros((4, 4, 2))
    prob[:2, :2, 1] = 0.9
    sub = make_long_submission(["b", "a"], [prob, np.zeros((4, 4, 2))], NO_CLS, _params(4), classes, sample, {"a": (4, 4), "b": (4, 4)})
    assert sub.columns.tolist() == ["Image_Label", "EncodedPixels"]
    assert sub["Image_Label"].tolist() == ["b.jpg_x", "b.jpg_y", "a.jpg_x", "a.jpg_y"]
    assert sub["EncodedPixels"].tolist() == ["", "1 2 5 2", "", ""]
    # A row's classifier probability below its gate empties it.
    gated = _params(4).assign(gate=0.5)
    sub = make_long_submission(
        ["b", "a"], [prob, np.zeros((4, 4, 2))], np.array([0.9, 0.1, 0.9, 0.9]), gated, classes, sample, {"a": (4, 4), "b": (4, 4)}
    )
    assert (sub["EncodedPixels"] == "").all()
    # The min area of a row empties it.
    sub = make_long_submission(
        ["b", "a"], [prob, np.zeros((4, 4, 2))], NO_CLS, _params(4, 0.5, 5), classes, sample, {"a": (4, 4), "b": (4, 4)}
    )
    assert (sub["EncodedPixels"] == "").all()


def test_long_submission_refuses_a_sample_without_a_test_image(tmp_path):
    classes = Classes(("x", "y"))
    sample = tmp_path / "sample.csv"
    to_frame(IMAGE_LABEL, {}, ["a"], classes).to_csv(sample, index=False)
    with pytest.raises(UserError, match="no rows for test image b"):
        make_long_submission(["a", "b"], [np.zeros((4, 4, 2))] * 2, NO_CLS, _params(4), classes, sample, {"a": (4, 4), "b": (4, 4)})


# ----------------------------------------------------------------------------- the stages


@pytest.fixture(scope="module")
def mc_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc") / "demo_multiclass"
    demo_multiclass.generate(root, k=3, seed=5, n_train=48, n_test=12, size=64)
    return root


def _mc_cfg(root, artifacts, *overrides: str):
    data = [
        f"data.train_images={root / 'train' / 'images'}",
        f"data.train_masks={root / 'train' / 'labels'}",
        f"data.test_images={root / 'test' / 'images'}",
        f"data.sample_submission={root / 'sample_submission.csv'}",
        f"data.solution_masks={root / 'test_solution' / 'solution.csv'}",
        "data.metadata=[]",
        f"data.classes=[{', '.join(CLASSES)}]",
        "data.exclusive=true",
        "segment.target=multiclass",
        "classify.enabled=false",
        "pseudo.rounds=0",
        "ensemble.models=[segment]",
        "submit.metric=dice",
        f"experiment.artifacts={artifacts}",
    ]
    return config.load(SMOKE_CFG, [*FAST, *data, *overrides])


def _run(cfg, monkeypatch, root) -> dict:
    monkeypatch.setattr(paths, "SUBMISSIONS_DIR", root / "submissions")
    monkeypatch.setattr(paths, "REPO_ROOT", root)
    for name in GRAPH.stages:
        cache.run_stage(GRAPH, cfg, name)
    return {name: cache.read_manifest(cache.load_upstream(GRAPH, cfg, name))["metrics"] for name in ("segment", "scorer", "submit")}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["multiclass", "multilabel", "class_head", "pseudo", "separate"])
def test_k_classes_end_to_end(mc_data, tmp_path, monkeypatch, target):
    multilabel = ["segment.target=multilabel", "data.train_masks=null", f"data.train_rle_csv={mc_data / 'train_rle.csv'}"]
    pseudo = ["pseudo.rounds=1", "pseudo.soft=true", "pseudo.min_confident_share=0.0", "pseudo.mean_teacher.enabled=true"]
    extra = {
        "multiclass": [],
        "multilabel": multilabel,
        "class_head": ["classify.enabled=true", "classify.source=seg_head", "scorer.gates=[0.0, 0.5]"],
        # The K-output classifier, class-combination folds, rare-class oversampling, the foreground readout.
        "separate": [
            "classify.enabled=true",
            "classify.source=separate",
            "classify.loss=weighted_bce",
            "classify.input={mode: pad, size: 64, tile_overlap: 0}",
            "classify.train.oversample={empty: 1.0, rare_class: 1.0}",
            "folds.stratify=classes",
            "segment.train.oversample={empty: 1.0, rare_class: 1.0}",
            "ensemble.readout=foreground",
            "scorer.gates=[0.0, 0.5]",
        ],
        # Soft K-plane labels and a mean teacher over sigmoids, blended with the segment stage.
        "pseudo": [*multilabel, *pseudo, "pseudo.mean_teacher.batch_size=4", "ensemble.models=[segment, pseudo]"],
    }[target]
    cfg = _mc_cfg(mc_data, tmp_path / "artifacts", *extra)
    m = _run(cfg, monkeypatch, tmp_path)
    ens = cache.load_upstream(GRAPH, cfg, "ensemble")
    cls = pd.read_csv(ens / "oof_cls.csv")
    assert len(cls) == 48 * 3 and cls["class"].tolist()[:3] == CLASSES
    if target in ("class_head", "separate"):  # per-class image probabilities: ROC per class, they gate rows
        auc = cache.read_manifest(cache.load_upstream(GRAPH, cfg, "classify"))["metrics"] if target == "separate" else m["segment"]
        assert set(auc["class_auc"]) == set(CLASSES) and cls["prob"].notna().all()
        assert pd.read_csv(ens / "test_cls.csv")["prob"].notna().all()
    else:
        assert cls["prob"].isna().all()
    assert set(m["segment"]["per_class"]) == set(CLASSES) and set(m["scorer"]["per_class_cv"]) == set(CLASSES)
    row = m["scorer"]["per_class_cv"][CLASSES[0]]  # present rows, absent rows' false positives, all-empty
    assert row["images"] > 0 and 0 <= row["present"] <= 1 and 0 <= row["absent_fp"] <= 1 and 0 < m["scorer"]["all_empty_cv"] < 1
    seg_dir = cache.load_upstream(GRAPH, cfg, "segment")
    oof = ArrayStore(seg_dir, "oof")
    assert len(oof) == 48 and oof[0].shape[-1] == 3
    scores = pd.read_csv(seg_dir / "oof_scores.csv")
    assert len(scores) == 48 * 3 and scores["class"].tolist()[:3] == CLASSES
    sub = pd.read_csv(tmp_path / m["submit"]["file"], keep_default_na=False)
    sample = pd.read_csv(mc_data / "sample_submission.csv", keep_default_na=False)
    assert sub["Image_Label"].tolist() == sample["Image_Label"].tolist()
    assert 0 <= m["submit"]["hidden_score"] <= 1 and set(m["submit"]["hidden_per_class"]) == set(CLASSES)
    params = pd.read_csv(cache.load_upstream(GRAPH, cfg, "scorer") / "test_params.csv")
    assert len(params) == 12 * 3 and params["class"].tolist()[:3] == CLASSES
    _bundle_reproduces(cfg, mc_data, tmp_path, tmp_path / m["submit"]["file"])
    if target == "separate":
        _plan_k_classes(cfg, mc_data, tmp_path)
        _export_k_classes(cfg, mc_data, tmp_path, tmp_path / m["submit"]["file"])
    if target == "pseudo":
        labels = ArrayStore(cache.load_upstream(GRAPH, cfg, "pseudo") / "round1" / "fold0", "pseudo_masks")
        assert len(labels) == 12 and labels[0].shape[-1] == 3  # every test image, a soft plane per class
        assert len(ArrayStore(cache.load_upstream(GRAPH, cfg, "pseudo") / "final", "oof")) == 48


def _bundle_reproduces(cfg, data, tmp_path, submission) -> None:
    """The K-class run's offline bundle: predict.py, in a process that cannot see this checkout,
    writes the pipeline's long-format submission byte for byte."""
    import subprocess
    import sys

    from pipeline import api

    out = tmp_path / "bundle"
    api.bundle(cfg, out)
    cmd = [sys.executable, "-I", str(out / "predict.py"), "--images", str(data / "test" / "images"), "--out", str(tmp_path / "b.csv")]
    cmd += ["--sample-submission", str(data / "sample_submission.csv")]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "b.csv").read_bytes() == submission.read_bytes()


def _export_k_classes(cfg, data, tmp_path, submission) -> None:
    """A K-class bundle with TorchScript fold models (and a separate K-output classifier):
    predict.py writes the same (image, class) rows, most of them identical (a traced graph
    computes in another order, so a few pixels at the threshold may flip)."""
    import subprocess
    import sys

    from pipeline import api

    out = tmp_path / "bundle_ts"
    manifest = api.bundle(cfg, out, export="torchscript")
    assert manifest["export"]["kind"] == "torchscript" and any(f.endswith(".ts") for f in manifest["files"])
    cmd = [sys.executable, "-I", str(out / "predict.py"), "--images", str(data / "test" / "images"), "--out", str(tmp_path / "ts.csv")]
    cmd += ["--sample-submission", str(data / "sample_submission.csv")]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got, want = (pd.read_csv(p, keep_default_na=False) for p in (tmp_path / "ts.csv", submission))
    assert got.iloc[:, 0].tolist() == want.iloc[:, 0].tolist()
    assert (got.iloc[:, 1] == want.iloc[:, 1]).mean() >= 0.9


def _plan_k_classes(cfg, data, tmp_path) -> None:
    """The planner scores K classes over (image, class) rows; the replanned bundle predicts."""
    import subprocess
    import sys

    from pipeline import api

    plans, pick = api.plan(cfg, "1h", bundle_dir=tmp_path / "bundle")
    assert len(plans) == 7 * 2 and 0 < pick["oof"] <= 1  # 7 view sets x 1 or 2 fold models
    cmd = [
        sys.executable,
        "-I",
        str(tmp_path / "bundle" / "predict.py"),
        "--images",
        str(data / "test" / "images"),
        "--out",
        str(tmp_path / "p.csv"),
    ]
    res = subprocess.run(
        [*cmd, "--sample-submission", str(data / "sample_submission.csv")], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "p.csv")) == 12 * 3


@pytest.mark.slow
def test_subclasses_train_sub_class_channels_and_give_one_map(smoke_cfg, tmp_path):
    common = ["pseudo.rounds=0", "ensemble.models=[segment]", "classify.enabled=false"]
    plain = smoke_cfg(*common, artifacts=tmp_path / "a")
    split = smoke_cfg(*common, "segment.subclasses={by: size, n: 2}", artifacts=tmp_path / "b")
    dirs = [cache.run_stage(GRAPH, c, "segment")[0] for c in (plain, split)]
    state = torch.load(dirs[1] / "fold0" / "model.pt", weights_only=True)
    head = [v for k, v in state.items() if k.endswith("segmentation_head.0.weight")][0]
    assert head.shape[0] == 3 + 2  # background + 2 sub-classes, a distance map per sub-class
    a, b = (ArrayStore(d, "oof") for d in dirs)
    assert a[0].shape == b[0].shape and a[0].shape[-1] == 1
    assert not np.array_equal(a.data, b.data)


def test_k_class_pseudo_labels_pack_hard_keep_soft_and_train(tmp_path):
    from pipeline.config.teachers import PseudoCfg, ScoreSelectCfg
    from pipeline.training.pseudo_labels import label_coverage, select, write_labels

    probs = [np.zeros((4, 4, 2)), np.zeros((4, 4, 2))]
    probs[0][:2, :, 0], probs[0][:, :1, 1] = 0.95, 0.92  # two overlapping classes
    probs[1][...] = 0.5  # unsure everywhere
    hard = write_labels(tmp_path / "h", ["a", "b"], probs, soft=False)
    assert hard[0].shape == (4, 4, 1)
    np.testing.assert_array_equal(truth_planes(hard[0], 2)[0], probs[0][..., 0] > 0.5)
    np.testing.assert_array_equal(truth_planes(hard[0], 2)[1], probs[0][..., 1] > 0.5)
    soft = write_labels(tmp_path / "s", ["a", "b"], probs, soft=True)
    assert soft[0].shape == (4, 4, 2)
    # a pixel of either class is foreground: 8 + 4 - 2 overlapping = 10 of 16
    np.testing.assert_allclose(label_coverage(hard, ["a"], False), [10 / 16])
    np.testing.assert_allclose(label_coverage(soft, ["a"], True), [10 / 16])
    ds = SegDataset(soft, soft, np.arange(2), Geometry("resize", 4), soft=True, classes=2)
    sample = ds[0]
    np.testing.assert_allclose(sample["mask"].numpy(), np.moveaxis(probs[0], -1, 0), atol=0.003)
    assert sample["label"].tolist() == [1.0, 1.0]
    cfg = PseudoCfg(1, 0.1, 0.9, 0.1, 0.9, 0.9, 0, False, 1, None, ScoreSelectCfg(False, 0.0))
    assert select(cfg, probs, np.full(2, np.nan)).tolist() == [0]
    # per-class image probabilities: each class of an image must be confident
    assert select(cfg, probs, np.array([[0.95, 0.5], [0.95, 0.05]])).tolist() == []
    assert select(cfg, probs, np.array([[0.95, 0.02], [0.5, 0.5]])).tolist() == [0]


def test_mean_teacher_compares_softmax_probabilities(tmp_path):
    from pipeline.config.teachers import MeanTeacherCfg
    from pipeline.core.store import write_store
    from pipeline.training.mean_teacher import MeanTeacher

    write_store(tmp_path, "imgs", [(f"t{i}", np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(4)])
    cfg = _cfg(
        "data.classes=[a, b]",
        "data.exclusive=true",
        "segment.target=multiclass",
        "classify.source=seg_head",
        "pseudo.rounds=0",
        "ensemble.models=[segment]",
    )
    mt = MeanTeacher(
        ArrayStore(tmp_path, "imgs"), Geometry("resize", 32), MeanTeacherCfg(True, 1.0, 0.9, 2, 0.0, False, False), cfg.segment, seed=3
    )
    x = torch.randn(2, 3, 4, 4)
    np.testing.assert_allclose(mt.activate(x).sum(1).numpy(), 1.0, rtol=1e-6)  # background + classes
    net = build_segmentation(cfg.segment.model, 3, aux=False, classes=2, softmax=True)
    loss, parts = mt.loss(net)
    assert torch.isfinite(loss) and parts["consistency"] >= 0


def test_digit_class_names_stay_names(tmp_path):
    from pipeline.data.classrows import cls_frame, read_rows, row_probs

    path = tmp_path / "cls.csv"
    cls_frame(["a", "b"], [[0.1, 0.2], [0.3, 0.4]], ["1", "2"]).to_csv(path, index=False)
    table = read_rows(path)
    assert table["class"].tolist() == ["1", "2", "1", "2"]
    np.testing.assert_allclose(row_probs(table, ["b", "a"], ["1", "2"]), [0.3, 0.4, 0.1, 0.2])


def test_a_user_coverage_column_stays_a_binary_feature():
    meta = pd.DataFrame({"id": ["a"], "coverage": [0.2], "coverage_est": [0.5], "empty": [False]})
    table = feature_table(["a"], [np.full((8, 8), 0.5)], None, {"a": np.zeros((8, 8, 1), np.uint8)}, np.array([np.nan]), meta)
    assert "meta_coverage_est" in table.columns and "meta_coverage" not in table.columns


def test_long_submission_refuses_two_keys_for_one_image(tmp_path):
    classes = Classes(("x", "y"))
    sample = tmp_path / "sample.csv"
    to_frame(IMAGE_LABEL, {}, ["a.jpg", "a.png"], classes).to_csv(sample, index=False)
    with pytest.raises(UserError, match="both name test image a"):
        make_long_submission(["a"], [np.zeros((4, 4, 2))], NO_CLS[:2], _params(2), classes, sample, {"a": (4, 4)})
