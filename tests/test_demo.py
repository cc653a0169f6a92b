"""Tests for the synthetic demo dataset generator (small config, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core import folders
from pipeline.demo import binary as demo
from pipeline.demo import cli as demo_cli

SMALL = {"n_train": 120, "n_test": 40}
TILE = 101


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    nums = [int(v) for v in rle.split()] if isinstance(rle, str) else []
    for start, length in zip(nums[::2], nums[1::2], strict=True):
        flat[start - 1 : start - 1 + length] = 255
    return flat.reshape(shape, order="F")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("a") / "demo"
    demo.generate(out, seed=7, **SMALL)
    return out


def test_same_seed_is_byte_identical(demo_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "demo"
    demo.generate(other, seed=7, **SMALL)
    assert _files(demo_dir) == _files(other)
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temp folder left beside it


def test_different_seed_differs(demo_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "demo"
    demo.generate(other, seed=8, **SMALL)
    a, b = _files(demo_dir), _files(other)
    assert a["metadata.csv"] != b["metadata.csv"]
    assert set(a) != set(b)  # ids depend on the seed


def test_layout_and_stats(demo_dir: Path) -> None:
    stats = json.loads((demo_dir / "stats.json").read_text())
    assert stats["seed"] == 7 and stats["version"] == demo.VERSION
    assert stats["n_train"] == 120 and stats["n_test"] == 40
    train = sorted((demo_dir / "train/images").glob("*.png"))
    test = sorted((demo_dir / "test/images").glob("*.png"))
    assert len(train) == 120 and len(test) == 40
    assert {p.name for p in train} == {p.name for p in (demo_dir / "train/masks").glob("*.png")}
    assert {p.name for p in test} == {p.name for p in (demo_dir / "test_solution/masks").glob("*.png")}
    for split in ("train", "test"):
        assert 0.35 <= stats[f"{split}_empty_share"] <= 0.45
        assert 0.0 < stats[f"{split}_mean_coverage_nonempty"] <= 1.0
    meta = pd.read_csv(demo_dir / "metadata.csv", dtype={"id": str})
    assert list(meta.columns) == ["id", "z"]
    assert set(meta.id) == {p.stem for p in train + test}
    assert meta.id.str.fullmatch(r"[0-9a-f]{10}").all()


def test_images_and_masks(demo_dir: Path) -> None:
    empties = []
    for p in sorted((demo_dir / "train/masks").glob("*.png")):
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        img = cv2.imread(str(demo_dir / "train/images" / p.name), cv2.IMREAD_UNCHANGED)
        assert m.shape == img.shape == (TILE, TILE)
        assert m.dtype == img.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}
        empties.append(not m.any())
    share = float(np.mean(empties))
    stats = json.loads((demo_dir / "stats.json").read_text())
    assert share == pytest.approx(stats["train_empty_share"], abs=1e-3)


def test_solution_rle_matches_masks(demo_dir: Path) -> None:
    sol = pd.read_csv(demo_dir / "test_solution/solution.csv", dtype={"id": str})
    assert len(sol) == 40
    for row in sol.itertuples():
        m = cv2.imread(str(demo_dir / "test_solution/masks" / f"{row.id}.png"), 0)
        np.testing.assert_array_equal(_rle_decode(row.rle_mask, (TILE, TILE)), m)


def test_tile_positions_on_grid_and_adjacent(demo_dir: Path) -> None:
    pos = pd.read_csv(demo_dir / "tile_positions.csv", dtype={"id": str})
    assert len(pos) == 160 and set(pos.split) == {"train", "test"}
    assert (pos.y == pos.row * TILE).all() and (pos.x == pos.col * TILE).all()
    assert not pos.duplicated(["section", "row", "col"]).any()

    def img(r: pd.Series) -> np.ndarray:
        return cv2.imread(str(demo_dir / r.split / "images" / f"{r.id}.png"), 0).astype(float)

    # Vertical neighbours in the same split continue each other's texture: the
    # seam between them is smoother than between unrelated tiles.
    by_pos = {(r.section, r.row, r.col): r for r in pos.itertuples() if r.split == "train"}
    pairs = [(a, by_pos[k[0], k[1] + 1, k[2]]) for k, a in by_pos.items() if (k[0], k[1] + 1, k[2]) in by_pos]
    assert len(pairs) >= 5

    # Smooth along each edge row: per-pixel noise would otherwise hide the continuity.
    def seam_gap(a, b) -> float:
        edge_a = cv2.GaussianBlur(img(a)[-1:], (0, 0), 3)
        edge_b = cv2.GaussianBlur(img(b)[:1], (0, 0), 3)
        return float(np.abs(edge_a - edge_b).mean())

    seam = np.mean([seam_gap(a, b) for a, b in pairs])
    rand = np.mean([seam_gap(a, b) for (a, _), (_, b) in zip(pairs, pairs[3:] + pairs[:3], strict=True)])
    assert seam < 0.6 * rand


def test_existing_output_is_reused(demo_dir: Path) -> None:
    stamp = (demo_dir / "stats.json").stat().st_mtime_ns
    stats = demo.generate(demo_dir, seed=7, **SMALL)
    assert stats["seed"] == 7
    assert (demo_dir / "stats.json").stat().st_mtime_ns == stamp


def test_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--seed", "3", "--n-train", "30", "--n-test", "10"]
    assert demo_cli.main(argv) == 0
    assert "train=30" in capsys.readouterr().out
    assert len(list((out / "test/images").glob("*.png"))) == 10


def _fake_build(tmp: Path, seed: int, n_train: int, n_test: int, tile: int) -> dict:
    """Stands in for demo._build: a folder with a matching stats.json, in milliseconds."""
    stats = {"version": demo.VERSION, "seed": seed, "n_train": n_train, "n_test": n_test, "tile": tile}
    stats |= {"train_empty_share": 0.4, "test_empty_share": 0.4, "train_mean_coverage_nonempty": 0.3}
    (tmp / "stats.json").write_text(json.dumps(stats))
    return stats


@pytest.mark.parametrize("foreign_stats", [False, True])
def test_cli_refuses_folder_it_did_not_make(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str], foreign_stats: bool) -> None:
    from pipeline.__main__ import main

    monkeypatch.setattr(demo, "_build", _fake_build)
    out = tmp_path / "data"
    out.mkdir()
    (out / "model.pt").write_text("an artifact the demo did not make")
    if foreign_stats:  # an ingest artifact has a stats.json too
        (out / "stats.json").write_text('{"channels": 1}')
    before = sorted(p.name for p in out.iterdir())
    assert main(["demo-data", "--out", str(out), "--seed", "3"]) == 2
    assert (out / "model.pt").read_text() == "an artifact the demo did not make"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "stats.json" in err, err
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_replaces_own_demo_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo, "_build", _fake_build)
    out = tmp_path / "demo"
    demo.generate(out, seed=1, **SMALL)
    (out / "old.txt").write_text("from seed 1")
    (tmp_path / ".demo.tmp999999999").mkdir()  # left by a killed run (no such pid)
    assert demo.generate(out, seed=2, **SMALL)["seed"] == 2
    assert json.loads((out / "stats.json").read_text())["seed"] == 2
    assert not (out / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_failed_swap_keeps_old_demo_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo, "_build", _fake_build)
    out = tmp_path / "demo"
    demo.generate(out, seed=1, **SMALL)
    real, calls = folders.os.replace, []

    def flaky(src, dst) -> None:
        calls.append(src)
        if len(calls) == 2:  # the new folder's rename into place
            raise OSError("simulated crash")
        real(src, dst)

    monkeypatch.setattr(folders.os, "replace", flaky)
    with pytest.raises(OSError, match="simulated"):
        demo.generate(out, seed=2, **SMALL)
    assert json.loads((out / "stats.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
