"""Segmentation stage on the smoke config: OOF maps, test maps, resume after a kill, oversampling."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from pipeline.config import loader as config
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore
from pipeline.data.datasets import coverage_bin, sample_weights
from pipeline.data.tables import load_folds
from pipeline.engine import cache
from pipeline.evaluation.oof import score_probs
from pipeline.stages import GRAPH
from pipeline.training import segmentation as segment
from pipeline.training.loop import make_loader

REPO = Path(__file__).resolve().parent.parent
SMOKE_CFG = REPO / "configs" / "smoke.yaml"
N_TRAIN, N_TEST = 48, 12


@pytest.fixture(scope="module")
def cfg(smoke_cfg):
    return smoke_cfg()


@pytest.fixture(scope="module")
def seg_dir(cfg) -> Path:
    return cache.run_stage(GRAPH, cfg, "segment")[0]


@pytest.fixture(scope="module")
def ingest_dir(cfg, seg_dir) -> Path:
    return cache.load_upstream(GRAPH, cfg, "ingest")


def _folds(cfg) -> pd.DataFrame:
    return load_folds(cache.load_upstream(GRAPH, cfg, "folds"))


# ----------------------------------------------------------------------------- OOF


@pytest.mark.slow
def test_oof_store_holds_each_train_id_once_at_original_size(cfg, seg_dir, ingest_dir):
    train_ids = ArrayStore(ingest_dir, "images").ids
    assert len(train_ids) == N_TRAIN
    for name in ("oof", "oof_dist"):
        store = ArrayStore(seg_dir, name)
        assert store.ids == train_ids, name
        assert len(set(store.ids)) == len(store.ids)
        for i in range(len(store)):
            assert store[i].shape == (101, 101, 1)
            assert store[i].dtype == np.uint8


@pytest.mark.slow
def test_oof_scores_csv_and_manifest_metrics(cfg, seg_dir, ingest_dir):
    folds = _folds(cfg)
    scores = pd.read_csv(seg_dir / "oof_scores.csv", dtype={"id": str})
    assert scores["id"].tolist() == ArrayStore(ingest_dir, "images").ids
    assert dict(zip(scores["id"], scores["fold"], strict=True)) == dict(zip(folds["id"], folds["fold"], strict=True))
    assert scores["tgs"].between(0, 1).all() and scores["dice"].between(0, 1).all()
    # The CSV agrees with the stored maps.
    oof, masks = ArrayStore(seg_dir, "oof"), ArrayStore(ingest_dir, "masks")
    probs = [oof.get(i)[..., 0] / 255.0 for i in scores["id"]]
    truths = [masks.get(i)[..., 0] for i in scores["id"]]
    np.testing.assert_allclose(scores["tgs"], score_probs(truths, probs, cfg.segment.train.eval_threshold))

    metrics = cache.read_manifest(seg_dir)["metrics"]
    assert metrics["n_oof"] == N_TRAIN
    assert metrics["oof_tgs"] == pytest.approx(scores["tgs"].mean(), abs=1e-4)
    assert set(metrics["fold_tgs"]) == {f"fold{k}" for k in sorted(folds["fold"].unique())} == {"fold0", "fold1"}
    for k, v in metrics["fold_tgs"].items():
        assert v == pytest.approx(scores.loc[scores["fold"] == int(k[4:]), "tgs"].mean(), abs=1e-4)
    for k in (0, 1):
        fold = seg_dir / f"fold{k}"
        assert (fold / "model.pt").is_file() and (fold / "curves.png").is_file()
        assert not (fold / "checkpoint.pt").exists()
        history = pd.read_csv(fold / "metrics.csv")
        assert history["epoch"].tolist() == list(range(cfg.segment.train.epochs))


# ----------------------------------------------------------------------------- test maps


@pytest.mark.slow
def test_predict_test_maps_at_original_size(cfg, seg_dir):
    test_dir = cache.run_stage(GRAPH, cfg, "ingest_test")[0]
    store = ArrayStore(test_dir, "test_images")
    assert len(store) == N_TEST
    masks, dists, _ = segment.predict_test(cfg, seg_dir, store)
    assert len(masks) == N_TEST and dists is not None and len(dists) == N_TEST
    for i in range(N_TEST):
        assert masks[i].shape == store[i].shape[:2] == (101, 101)
        assert np.isfinite(masks[i]).all() and masks[i].min() >= 0 and masks[i].max() <= 1
        assert dists[i].shape == (101, 101)


@pytest.mark.slow
def test_ensemble_writes_a_test_map_per_test_id(cfg):
    ens_dir = cache.run_stage(GRAPH, cfg, "ensemble")[0]
    test_ids = ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest_test"), "test_images").ids
    store = ArrayStore(ens_dir, "test")
    assert store.ids == test_ids
    assert all(store[i].shape == (101, 101, 1) for i in range(len(store)))


@pytest.mark.slow
def test_adabn_changes_test_maps_only(cfg, smoke_cfg):
    plain = cache.run_stage(GRAPH, cfg, "ensemble")[0]
    adapted = cache.run_stage(GRAPH, smoke_cfg("ensemble.adabn=true"), "ensemble")[0]
    assert adapted != plain
    for name in ("oof", "test"):
        a, b = ArrayStore(plain, name), ArrayStore(adapted, name)
        assert a.ids == b.ids
        diff = max(np.abs(a[i].astype(int) - b[i].astype(int)).max() for i in range(len(a)))
        assert (diff == 0) if name == "oof" else (diff > 0), name
    cls_a, cls_b = (pd.read_csv(d / "test_cls.csv")["prob"] for d in (plain, adapted))
    assert not np.allclose(cls_a, cls_b)


# ----------------------------------------------------------------------------- resume


def _data_rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return 0


def _start_and_signal(overrides: list[str], ready, log_path: Path, extra: tuple[str, ...] = (), sig=signal.SIGKILL) -> tuple[bool, int]:
    """Run the segment stage in a subprocess and send it `sig` once `ready()` holds.

    Returns (whether it was still running when ready, its exit code)."""
    args = [sys.executable, "-m", "pipeline", "segment", "--config", str(SMOKE_CFG), *extra]
    for o in overrides:
        args += ["--set", o]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        try:
            while proc.poll() is None and time.monotonic() < deadline and not ready():
                time.sleep(0.03)
            alive = proc.poll() is None and ready()
            proc.send_signal(sig)
            return alive, proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.wait()


def _start_and_kill(overrides: list[str], metrics: Path, log_path: Path) -> bool:
    """SIGKILL the segment stage once an epoch is checkpointed; False when it ended first."""
    return _start_and_signal(overrides, lambda: _data_rows(metrics) >= 1, log_path)[0]


@pytest.mark.slow
def test_sigterm_during_a_forced_rerun_restores_the_previous_result(smoke_cfg, smoke_overrides, tmp_path):
    over = ["segment.train.epochs=4", "segment.train.folds=[0]", "segment.train.swa_epochs=1", "segment.input.size=96"]
    folder, _ = cache.run_stage(GRAPH, smoke_cfg(*over), "segment")
    before = (folder / cache.MANIFEST).read_text()
    backup = folder.with_name(folder.name + ".previous")
    metrics = folder / "fold0" / "metrics.csv"
    log_path = tmp_path / "run.log"
    alive, rc = _start_and_signal(
        smoke_overrides(*over), lambda: backup.exists() and _data_rows(metrics) >= 1, log_path, ("--force",), signal.SIGTERM
    )
    assert alive, log_path.read_text()[-2000:]
    assert rc == 128 + signal.SIGTERM
    assert (folder / cache.MANIFEST).read_text() == before
    assert not backup.exists()


@pytest.mark.slow
def test_segment_resumes_after_sigkill(smoke_cfg, smoke_overrides, tmp_path):
    epochs = 4
    # A bigger input makes each epoch long enough to kill the run between epochs; if a run
    # still finishes first, the next attempt uses a bigger input (and so a new stage key).
    for size in (64, 96, 160):
        over = [f"segment.train.epochs={epochs}", "segment.train.folds=[0]", "segment.train.swa_epochs=1", f"segment.input.size={size}"]
        cfg = smoke_cfg(*over)
        cache.run_stage(GRAPH, cfg, "folds")  # upstream in-process: the subprocess only trains
        folder = cache.stage_dir(GRAPH, cfg, "segment")
        assert not folder.exists()
        log_path = tmp_path / f"run{size}.log"
        if _start_and_kill(smoke_overrides(*over), folder / "fold0" / "metrics.csv", log_path):
            break
    else:
        pytest.fail(f"could not kill the segment stage mid-training:\n{log_path.read_text()[-2000:]}")

    assert not (folder / cache.MANIFEST).exists()
    assert (folder / "fold0" / "checkpoint.pt").is_file()
    assert dict((s, st) for s, st, _ in cache.status(GRAPH, cfg))["segment"] == "partial"
    assert not cache.is_done(GRAPH, cfg, "segment")

    again, ran, logs = _run_logged_ran(cfg)
    assert ran and again == folder
    resumed = [m for m in logs if m.startswith("resuming fold0 at epoch ")]
    assert len(resumed) == 1, logs
    assert 1 <= int(resumed[0].rsplit(" ", 1)[1]) < epochs
    history = pd.read_csv(folder / "fold0" / "metrics.csv")
    assert history["epoch"].tolist() == list(range(epochs))
    assert history["swa"].tolist() == [False] * (epochs - 1) + [True]
    assert not (folder / "fold0" / "checkpoint.pt").exists()
    assert dict((s, st) for s, st, _ in cache.status(GRAPH, cfg))["segment"] == "done"
    assert cache.read_manifest(folder)["metrics"]["fits"]["fold0"]["epochs"] == epochs


# ----------------------------------------------------------------------------- oversampling


def test_sample_weights_by_coverage_bin():
    cov = np.array([0.0, 0.05, 0.2, 0.7, 0.001, 0.0999, 0.1, 0.5, 1.0])
    assert coverage_bin(cov).tolist() == ["empty", "small", "medium", "large", "small", "small", "medium", "large", "large"]
    np.testing.assert_array_equal(sample_weights(cov, {"small": 5.0}), [1, 5, 1, 1, 5, 5, 1, 1, 1])
    np.testing.assert_array_equal(sample_weights(cov, {"empty": 0.5, "large": 3}), [0.5, 1, 1, 3, 1, 1, 1, 3, 3])
    with pytest.raises(UserError, match="tiny"):
        sample_weights(cov, {"tiny": 2.0})


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(i)


def _draws(loader, epochs: int) -> np.ndarray:
    return np.concatenate([b.numpy() for _ in range(epochs) for b in loader])


def test_oversampling_draws_small_coverage_images_more_often(cfg):
    tcfg = dataclasses.replace(cfg.segment.train, batch_size=8, num_workers=0)
    cov = np.array([0.05] * 8 + [0.0] * 12 + [0.3] * 10 + [0.8] * 10)
    small = coverage_bin(cov) == "small"
    ds = _Indices(len(cov))
    epochs = 20

    uniform = _draws(make_loader(ds, tcfg, sample_weights(cov, {"small": 1.0}), torch.Generator().manual_seed(0)), epochs)
    # Uniform: every image exactly once per epoch.
    assert np.bincount(uniform, minlength=len(cov)).tolist() == [epochs] * len(cov)
    assert small[uniform].mean() == pytest.approx(0.2)

    weighted = _draws(make_loader(ds, tcfg, sample_weights(cov, {"small": 5.0}), torch.Generator().manual_seed(0)), epochs)
    assert len(weighted) == len(uniform)
    # Expected share 8*5 / (8*5 + 32) = 0.56 over 800 draws (sd ~0.018).
    assert 0.45 < small[weighted].mean() < 0.67
    counts = np.bincount(weighted, minlength=len(cov))
    assert counts[small].mean() > 3 * counts[~small].mean()


# ----------------------------------------------------------------------------- bugs found


@pytest.mark.slow
def test_segment_stage_is_reproducible(smoke_cfg, tmp_path):
    over = ["segment.train.folds=[0]", "segment.train.epochs=1", "segment.train.swa_epochs=0", "segment.train.bf16='off'"]
    runs = []
    for name in ("a", "b"):
        cfg = smoke_cfg(*over, artifacts=tmp_path / name)
        folder = cache.run_stage(GRAPH, cfg, "segment")[0]
        runs.append((pd.read_csv(folder / "fold0" / "metrics.csv"), ArrayStore(folder, "oof")))
    (h1, o1), (h2, o2) = runs
    assert h1["train_loss"].tolist() == h2["train_loss"].tolist()
    assert all(np.array_equal(o1[i], o2[i]) for i in range(len(o1)))


@pytest.mark.slow
def test_pseudo_stage_is_reproducible(smoke_cfg, tmp_path):
    # The pseudo-labelled images' augmentation was unseeded, so two runs fine-tuned differently.
    over = ["segment.train.folds=[0]", "segment.train.epochs=1", "segment.train.swa_epochs=0", "segment.train.bf16='off'"]
    runs = []
    for name in ("a", "b"):
        cfg = smoke_cfg(*over, "pseudo.min_confident_share=0.0", "pseudo.prob_lo=1.0", artifacts=tmp_path / name)
        folder = cache.run_stage(GRAPH, cfg, "pseudo")[0]
        assert sum(json.loads((folder / "rounds.json").read_text())[1]["selected"].values()) > 0
        runs.append(pd.read_csv(folder / "round1" / "fold0" / "metrics.csv")["train_loss"].tolist())
    assert runs[0] == runs[1]


def test_bf16_off_is_accepted_unquoted():
    cfg = config.load(SMOKE_CFG, ["segment.train.bf16=off", "classify.train.bf16=on"])
    assert cfg.segment.train.bf16 == "off" and cfg.classify.train.bf16 == "on"


# ----------------------------------------------------------------------------- fold reuse


def _run_logged_ran(cfg, force: bool = False) -> tuple[Path, bool, list[str]]:
    """Run the segment stage; (folder, ran, the pipeline's log messages)."""
    logs: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append(record.getMessage())

    logger, handler = logging.getLogger("pipeline"), Collect(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        folder, ran = cache.run_stage(GRAPH, cfg, "segment", force=force)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return folder, ran, logs


def _run_logged(cfg, force: bool = False) -> tuple[Path, list[str]]:
    folder, _, logs = _run_logged_ran(cfg, force)
    return folder, logs


@pytest.mark.slow
def test_a_prediction_only_change_reuses_trained_folds(smoke_cfg, tmp_path):
    # With the classifier head, whose OOF probabilities are predicted again too.
    base = ["segment.train.epochs=1", "segment.train.swa_epochs=0", "classify.source=seg_head"]
    first, _ = _run_logged(smoke_cfg(*base, "segment.train.folds=[0]", artifacts=tmp_path))
    # Another fold and another TTA: a new segment folder, but fold 0 trains exactly as before.
    second, logs = _run_logged(smoke_cfg(*base, "segment.train.folds=[0, 1]", "segment.train.tta=[none]", artifacts=tmp_path))
    assert second != first
    assert [m for m in logs if "reused" in m] == [f"fold0: model reused from {first.name} (same training, other prediction settings)"]
    assert (second / "fold0" / "model.pt").read_bytes() == (first / "fold0" / "model.pt").read_bytes()
    assert (second / "fold1" / "model.pt").is_file()
    assert cache.read_manifest(second)["metrics"]["reused_folds"] == {"fold0": first.name}
    # The OOF maps were predicted again, under the new TTA.
    a, b = ArrayStore(first / "fold0", "oof"), ArrayStore(second / "fold0", "oof")
    assert a.ids == b.ids and not all(np.array_equal(a[i], b[i]) for i in range(len(a)))
    assert len(pd.read_csv(second / "oof_cls.csv")) == N_TRAIN


@pytest.mark.slow
def test_a_training_change_or_force_trains_again(smoke_cfg, tmp_path):
    base = ["segment.train.epochs=1", "segment.train.swa_epochs=0", "segment.train.folds=[0]"]
    first, _ = _run_logged(smoke_cfg(*base, artifacts=tmp_path))
    other_lr, logs = _run_logged(smoke_cfg(*base, "segment.train.lr=0.01", artifacts=tmp_path))
    assert not any("reused" in m for m in logs)
    assert "reused_folds" not in cache.read_manifest(other_lr)["metrics"]
    assert (other_lr / "fold0" / "model.pt").read_bytes() != (first / "fold0" / "model.pt").read_bytes()
    # --force recomputes: neither its own previous result nor a sibling's fold is copied.
    _, logs = _run_logged(smoke_cfg(*base, "segment.train.tta=[none]", artifacts=tmp_path), force=True)
    assert not any("reused" in m for m in logs)
