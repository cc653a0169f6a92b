"""Shared fixtures: a tiny generated dataset and smoke configs pointing at it.

`smoke_cfg(*overrides, artifacts=None)` loads configs/smoke.yaml with the data paths pointed at a
session-wide generated dataset (48 train, 12 test images) and the artifacts at a session-wide tmp
folder, so stages run once per session and later tests reuse them from the cache.

Tests that cost seconds carry `@pytest.mark.slow` (registered in pytest.ini): those that run a
training stage or fit a model for several epochs, start a subprocess that imports torch, or ingest
the real TGS data. `pytest -m "not slow"` is the fast subset (under a minute) and still touches
every module. A test reading a stage that the session may already have cached is slow all the
same: whichever such test runs first pays for the training.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import stages as _stages  # noqa: F401  (registers the stages)
from pipeline.config import loader as config
from pipeline.config.schema import Config
from pipeline.core import paths
from pipeline.demo import binary as demo

REPO = Path(__file__).resolve().parent.parent
SMOKE_CFG = REPO / "configs" / "smoke.yaml"
SMOKE_SIZES = {"seed": 3, "n_train": 48, "n_test": 12}
# One torch thread and one LightGBM thread: on a loaded 2-core machine OpenMP spin-waiting makes
# multi-threaded CPU training 10-50x slower (the smoke pipeline: ~150 s vs ~20 s; the scorer's
# LightGBM after torch training: 13 s vs 0.3 s). experiment.threads is in no stage key;
# scorer.lgbm.num_threads changes only the scorer and submit keys.
FAST = ["experiment.threads=1", "scorer.lgbm.num_threads=1"]
# The same for the tests that use torch or LightGBM directly: in the whole suite a smoke stage run
# early leaves the process at one thread, but `-m "not slow"` runs none (a Fitter test: 13.6 s
# instead of about 1 s on a busy machine). Before any test module imports either; an
# OMP_NUM_THREADS set outside wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No MLflow store for every test's artifacts (a new SQLite store takes seconds of schema
# migrations): tests/test_tracking.py switches tracking back on where it tests it.
os.environ["PIPELINE_TRACKING"] = "0"


def data_overrides(root: Path) -> list[str]:
    return [
        f"data.train_images={root / 'train' / 'images'}",
        f"data.train_masks={root / 'train' / 'masks'}",
        f"data.test_images={root / 'test' / 'images'}",
        f"data.metadata=[{root / 'metadata.csv'}]",
        f"data.solution_masks={root / 'test_solution' / 'masks'}",
    ]


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smoke_data") / "smoke"
    demo.generate(root, **SMOKE_SIZES)
    return root


@pytest.fixture(scope="session")
def smoke_artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke_artifacts")


@pytest.fixture(scope="session")
def smoke_overrides(smoke_data, smoke_artifacts) -> Callable[..., list[str]]:
    """The --set list that points configs/smoke.yaml at the tmp dataset and artifacts."""

    def make(*overrides: str, artifacts: Path | None = None) -> list[str]:
        return [*data_overrides(smoke_data), f"experiment.artifacts={artifacts or smoke_artifacts}", *FAST, *overrides]

    return make


@pytest.fixture(scope="session")
def smoke_cfg(smoke_overrides) -> Callable[..., Config]:
    def make(*overrides: str, artifacts: Path | None = None) -> Config:
        return config.load(SMOKE_CFG, smoke_overrides(*overrides, artifacts=artifacts))

    return make


@pytest.fixture
def flip_predictor(tmp_path, smoke_cfg) -> Callable[..., tuple]:
    """`make(n_images, *overrides)` -> (smoke segmentation model in eval mode, a store of n random
    40x40 RGB images, its inference spec with flip TTA in batches of 4)."""

    def make(n_images: int, *overrides: str) -> tuple:
        # Imported here, as the test modules do: torch loads after OMP_NUM_THREADS is set above.
        import numpy as np
        import torch

        from pipeline.core.store import ArrayStore, write_store
        from pipeline.training.segmentation import build_model, infer_spec

        cfg = smoke_cfg(*overrides)
        rng = np.random.default_rng(0)
        images = ((f"i{k}", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for k in range(n_images))
        write_store(tmp_path, "images", images)
        torch.manual_seed(0)
        model = build_model(cfg.segment, 3).eval()
        spec = dataclasses.replace(infer_spec(cfg.segment, torch.device("cpu"), ["none", "hflip"]), batch_size=4)
        return model, ArrayStore(tmp_path, "images"), spec

    return make


@pytest.fixture
def submissions_dir(tmp_path, monkeypatch) -> Path:
    """Redirect the submit stage's output folder to a tmp dir.

    paths.REPO_ROOT is redirected too: submit records the file relative to REPO_ROOT and fails
    for a folder outside it (see test_stages_e2e.test_submit_outside_repo_root). Safe here
    because every path in the smoke test configs is absolute."""
    target = tmp_path / "submissions"
    monkeypatch.setattr(paths, "SUBMISSIONS_DIR", target)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    return target


@pytest.fixture
def pipeline_logs(caplog) -> Callable[[], list[str]]:
    """The messages the pipeline's loggers have written so far in this test (INFO and up)."""
    caplog.set_level(logging.INFO, logger="pipeline")
    return lambda: [r.getMessage() for r in caplog.records if r.name.startswith("pipeline")]
