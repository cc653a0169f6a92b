"""`python -m pipeline init` (issue 38): each rule from a fingerprint to the plan, the budget
arithmetic, and the command end to end on small generated datasets (refusals included)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.config import loader
from pipeline.data.duplicates import duplicate_groups
from pipeline.data.ingest import validate
from pipeline.data.sources import Sources
from pipeline.data.tables import load_folds
from pipeline.engine import cache
from pipeline.init import budget, rules
from pipeline.init.probe import Probe
from pipeline.stages import GRAPH


def _fp(
    n: int = 1000,
    side: int = 101,
    vary: float = 1.0,
    empty: float = 0.4,
    majority: float = 0.0,
    k: int = 1,
    areas: tuple = (10, 50, 200, 800, 3000),
    coverage: float = 0.05,
) -> dict:
    names = [f"c{i}" for i in range(k)] if k > 1 else []
    q = dict(zip(("q05", "q25", "q50", "q75", "q95"), areas, strict=True))
    cls = {
        "images": int(n * (1 - empty) / k),
        "empty_share": empty,
        "coverage": {"q50": coverage},
        "majority_share": majority,
        "objects_per_image": {"q50": 1.0},
        "object_area": q,
    }
    dims = {"q50": float(side), "min": side, "max": int(side * vary)}
    return {
        "train": {"count": n, "height": dims, "width": dims, "distinct_sizes": 1 if vary == 1 else 50},
        "test": {"count": n // 2},
        "channels": 1,
        "intensity": {"train": {"mean": 120.0, "std": 40.0}, "test": {"mean": 120.0, "std": 40.0}},
        "classes": names,
        "k": k,
        "exclusive_observed": True,
        "empty_share": empty,
        "per_class": {name: dict(cls) for name in (names or ["foreground"])},
        "metadata": [],
        "duplicates": {"groups": 0, "images": 0},
    }


def test_small_tiles_are_padded_large_or_varied_images_tiled():
    plan = rules.make_plan(_fp(side=101))
    assert plan.get("segment.input") == {"mode": "pad", "size": 128, "tile_overlap": 0}
    varied = rules.make_plan(_fp(side=300, vary=2.0)).get("segment.input")
    assert varied["mode"] == "tile" and 128 <= varied["size"] <= 256 and 0 < varied["tile_overlap"] < varied["size"] // 2
    # the tile grows with the objects: twice the 95th-percentile diameter
    small_objects = rules.make_plan(_fp(side=512, areas=(5, 10, 20, 40, 300))).get("segment.input")
    large_objects = rules.make_plan(_fp(side=512, areas=(5, 10, 20, 4000, 9000))).get("segment.input")
    assert small_objects["size"] == 128 and large_objects["size"] == 224


def test_a_thin_network_gets_small_tiles_and_a_tiny_set_small_batches():
    fp = _fp(n=30, side=512, empty=0.0, areas=(20, 230, 420, 45000, 62000))
    assert rules.make_plan(fp).get("segment.input")["size"] == 256  # extent alone: the whole network
    for c in fp["per_class"].values():
        c["object_width"] = {"q50": 12.0, "q95": 20.0}
    plan = rules.make_plan(fp)
    assert plan.get("segment.input")["size"] == 128
    assert plan.get("segment.train.batch_size") == 6  # 24 training images: 4 steps an epoch
    assert rules.make_plan(_fp(side=512, areas=(5, 10, 20, 4000, 9000))).get("segment.train.batch_size") == 10  # 224 px: fewer a step


def test_orientation_inverts_a_majority_foreground_only_for_one_class():
    assert rules.orientation(_fp(majority=0.9))
    assert not rules.orientation(_fp(majority=0.1))
    assert not rules.orientation(_fp(majority=0.9, k=3))


def test_folds_follow_size_classes_and_groups():
    assert rules.make_plan(_fp(n=30)).get("folds.n_folds") == 5
    assert rules.make_plan(_fp(n=3000)).get("folds.n_folds") == 3
    assert rules.make_plan(_fp(k=3)).get("folds.stratify") == "classes"
    assert rules.make_plan(_fp()).get("folds.stratify") == "coverage"
    dup = _fp()
    dup["duplicates"] = {"groups": 3, "images": 7}
    assert rules.make_plan(dup).get("folds.duplicates") and not rules.make_plan(_fp()).get("folds.duplicates")
    fp = _fp()
    fp["metadata"] = [
        {"column": "depth", "group_candidate": False, "distinct": 900},
        {"column": "patient", "group_candidate": True, "distinct": 40},
    ]
    assert rules.make_plan(fp).get("folds.group_column") == "patient"
    assert rules.make_plan(_fp()).get("folds.group_column") is None


def test_gating_and_gates_follow_the_empty_share():
    on, off = rules.make_plan(_fp(empty=0.5)), rules.make_plan(_fp(empty=0.05))
    assert on.get("classify.enabled") and len(on.get("scorer.gates")) > 1
    assert not off.get("classify.enabled") and off.get("scorer.gates") == [0.0]
    k = rules.make_plan(_fp(empty=0.5, k=3))
    assert k.get("classify.source") == "separate" and k.get("segment.target") == "multiclass"
    assert k.get("segment.train.oversample")["rare_class"] > 0


def test_post_processing_and_oversampling_follow_object_sizes():
    plan = rules.make_plan(_fp(areas=(40, 100, 400, 800, 3000), coverage=0.02))
    assert plan.get("scorer.min_areas") == [0, 20, 50, 200]
    assert plan.get("segment.train.oversample")["small"] == 3.0
    assert rules.make_plan(_fp(coverage=0.3)).get("segment.train.oversample")["small"] == 2.0


def test_metric_and_adabn():
    assert rules.make_plan(_fp(), metric="tgs").get("submit.metric") == "tgs"
    assert rules.make_plan(_fp()).get("submit.metric") == "dice"
    fp = _fp()
    fp["intensity"]["test"] = {"mean": 140.0, "std": 40.0}
    assert rules.make_plan(fp).get("ensemble.adabn") and not rules.make_plan(_fp()).get("ensemble.adabn")
    fp["intensity"]["test"] = {"mean": 120.0, "std": 35.0}  # the demo's shift: contrast, not level
    assert rules.make_plan(fp).get("ensemble.adabn")


def _probe(seg_train: float) -> Probe:
    return Probe(seg_train, seg_train / 3, seg_train, seg_train / 3, 32, "cpu", {})


def test_budget_sets_epochs_then_folds_and_views():
    fp = _fp(n=1000)
    plan = rules.make_plan(fp)
    long = budget.size(fp, plan, _probe(0.01), 3600)
    short = budget.size(fp, plan, _probe(0.01), 900)
    assert long.epochs > short.epochs >= budget.MIN_EPOCHS
    assert long.estimate["total"] <= budget.MARGIN * 3600 and short.estimate["total"] <= budget.MARGIN * 900
    tight = budget.size(fp, plan, _probe(0.05), 900)  # 4 epochs of 3 folds do not fit
    assert tight.folds_trained < 3 or tight.tta == ["none"]
    assert not budget.size(fp, plan, _probe(1.0), 60).fits
    budget.apply(plan, tight, 900)
    assert plan.get("segment.train.epochs") == tight.epochs and plan.get("segment.train.val_every") == tight.epochs


def test_duplicate_groups_exact_and_near():
    rng = np.random.default_rng(0)
    base = [cv2.GaussianBlur(rng.integers(0, 255, (64, 64), np.uint8), (0, 0), 4) for _ in range(4)]
    near = np.clip(base[1].astype(int) + 1, 0, 255).astype(np.uint8)
    arrays = {"a": base[0], "b": base[0].copy(), "c": base[1], "d": near, "e": base[2], "f": base[3], "flat": np.zeros((64, 64), np.uint8)}
    assert sorted(duplicate_groups(arrays)) == [["a", "b"], ["c", "d"]]


def _dataset(root: Path, n: int = 16, invert: bool = False, dup: bool = False, copies: int = 1) -> Path:
    """n train and 4 test 64 px images, half with a mask; with `dup`, train image 2k + 1 repeats
    image 2k for k < copies (the first exactly, the others one gray level brighter)."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for i in range(n if split == "train" else 4):
            img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64), np.uint8), (0, 0), 2)
            if dup and split == "train" and i % 2 and i // 2 < copies:
                img = cv2.imread(str(root / "train" / "images" / f"tr{i - 1}.png"), cv2.IMREAD_GRAYSCALE) + np.uint8(i > 1)
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / "images" / f"{split[:2]}{i}.png"), img)
            if split == "train":
                mask = np.zeros((64, 64), np.uint8)
                if i % 2:
                    mask[10 : 20 + i, 12:30] = 255
                mask = 255 - mask if invert else mask
                (root / "train" / "masks").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "train" / "masks" / f"{split[:2]}{i}.png"), mask)
    return root


def _init(root: Path, out: Path, *extra: str) -> int:
    args = ["init", "--train-images", str(root / "train" / "images"), "--train-masks", str(root / "train" / "masks")]
    return main([*args, "--test-images", str(root / "test" / "images"), "--budget", "3m", "--out", str(out), *extra])


@pytest.mark.slow
def test_init_writes_a_valid_config_and_never_overwrites(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    out = tmp_path / "ours.yaml"
    assert _init(root, out) == 0
    cfg = loader.load(out)
    assert cfg.segment.input.mode == "pad" and cfg.segment.input.size == 64
    assert cfg.classify.enabled  # half the masks are empty
    assert cfg.segment.train.epochs >= budget.MIN_EPOCHS
    fp = json.loads((tmp_path / "ours.fingerprint.json").read_text())
    assert fp["train"]["count"] == 16 and fp["empty_share"] == 0.5 and fp["probe"]["seg_train"] > 0
    text = out.read_text()
    assert "# segment.train.epochs:" in text and "Probe on" in text
    before = out.read_bytes()
    assert _init(root, out) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


@pytest.mark.slow
def test_init_inverts_a_majority_foreground_and_groups_duplicates(tmp_path):
    root = _dataset(tmp_path / "ds", invert=True, dup=True)
    out = tmp_path / "dups.yaml"
    assert _init(root, out) == 0
    cfg = loader.load(out)
    assert cfg.data.mask_invert and cfg.folds.duplicates
    fp = json.loads((tmp_path / "dups.fingerprint.json").read_text())
    assert fp["inverted"] and fp["empty_share"] == 0.5  # measured on the inverted masks
    assert fp["duplicates"]["groups"] == 1


def test_init_refuses_a_broken_dataset_with_the_ingest_lines(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", n=4)
    (root / "train" / "masks" / "tr2.png").unlink()
    out = tmp_path / "broken.yaml"
    assert _init(root, out) == 2
    err = capsys.readouterr().err
    expected = validate(
        Sources(train_images=root / "train" / "images", train_masks=root / "train" / "masks", test_images=root / "test" / "images")
    )
    assert expected and all(line in err for line in expected)
    assert not out.exists() and not (tmp_path / "broken.fingerprint.json").exists()


def test_mask_invert_reads_the_zero_pixels_as_foreground(tmp_path):
    root = _dataset(tmp_path / "ds", n=4, invert=True)
    from pipeline.data.ingest import scan_dataset

    src = dict(train_images=root / "train" / "images", train_masks=root / "train" / "masks")
    plain, inverted = scan_dataset(Sources(**src)), scan_dataset(Sources(**src, mask_invert=True))
    for i in plain.masks:
        assert np.array_equal(inverted.masks[i], 1 - plain.masks[i])
    assert not inverted.masks["tr0"].any()


def test_init_refuses_bad_arguments_and_an_impossible_invert(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", n=4)
    assert _init(root, tmp_path / "a.yaml", "--budget", "soon") == 2
    assert "init --budget: 'soon' is not a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:  # argparse: masks and RLE exclude each other
        main(["init", "--train-images", "x", "--train-masks", "y", "--train-rle", "z.csv", "--budget", "1h", "--out", "o.yaml"])
    assert both.value.code == 2
    assert not list(tmp_path.glob("*.yaml"))
    with pytest.raises(Exception, match="mask_invert: applies to one binary class"):
        loader.load_dict({"data": {"classes": ["a", "b"], "exclusive": True, "mask_invert": True}}, "x")


def test_folds_duplicates_keep_copies_in_one_fold(tmp_path):
    root = _dataset(tmp_path / "ds", n=24, dup=True, copies=6)
    over = [f"data.train_images={root / 'train' / 'images'}", f"data.train_masks={root / 'train' / 'masks'}"]
    over += [
        f"data.test_images={root / 'test' / 'images'}",
        "data.metadata=[]",
        "data.solution_masks=null",
        f"experiment.artifacts={tmp_path / 'art'}",
    ]
    fold_of = {}
    for on in (False, True):
        cfg = loader.load("configs/smoke.yaml", [*over, "folds.n_folds=2", f"folds.duplicates={str(on).lower()}"])
        folder = cache.run_stage(GRAPH, cfg, "folds")[0]
        fold_of[on] = load_folds(folder).set_index("id")["fold"]
    pairs = [(f"tr{2 * k}", f"tr{2 * k + 1}") for k in range(6)]
    assert all(fold_of[True][a] == fold_of[True][b] for a, b in pairs)
    assert any(fold_of[False][a] != fold_of[False][b] for a, b in pairs)  # a plain split parts some
    assert json.loads((folder / "manifest.json").read_text())["metrics"]["duplicate_pairs"] == 6


@pytest.mark.slow
def test_init_plans_k_exclusive_classes_from_label_images(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(12):
        img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64), np.uint8), (0, 0), 2)
        label = np.zeros((64, 64), np.uint8)
        label[5:20, 5:20] = 1 + i % 3  # class 1, 2 or 3
        label[40:50, 40:60] = 0 if i % 4 else 2
        for sub, arr in (("images", img), ("labels", label)):
            (tmp_path / "ds" / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "ds" / sub / f"k{i}.png"), arr)
    out = tmp_path / "kc.yaml"
    args = ["init", "--train-images", str(tmp_path / "ds" / "images"), "--train-masks", str(tmp_path / "ds" / "labels")]
    assert main([*args, "--classes", "a,b,c", "--budget", "3m", "--out", str(out)]) == 0
    cfg = loader.load(out)
    assert cfg.data.classes == ["a", "b", "c"] and cfg.data.exclusive and cfg.segment.target == "multiclass"
    assert cfg.folds.stratify == "classes" and cfg.submit.metric == "dice"
    assert cfg.segment.train.oversample["rare_class"] > 0
    fp = json.loads((tmp_path / "kc.fingerprint.json").read_text())
    assert fp["k"] == 3 and fp["per_class"]["b"]["images"] == 6  # i = 1, 4, 7, 10 and the second patch of 0, 8
