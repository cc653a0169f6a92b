"""Data-parallel training under torchrun (pipeline.core.distributed): the sampler's split of the
global batch, the batch-size check, and 2-process gloo runs of the smoke segment stage against
the 1-process run, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE_CFG

from pipeline import preflight
from pipeline.core import distributed
from pipeline.core.errors import UserError
from pipeline.data.loader import KeyedSampler

TORCHRUN = Path(sys.executable).parent / "torchrun"
REPO = Path(__file__).resolve().parent.parent
# 2 epochs on 24 images: the smoke model's OOF mAP moves by this much between seeds, and 2
# processes hold BatchNorm statistics of 4 images each instead of 8 (no SyncBatchNorm on a CPU).
TOLERANCE = 0.05


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    """This process as rank `rank` of a `world`-process group (without starting one)."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setattr(distributed, "active", lambda: world > 1)


@pytest.mark.parametrize("n", [40, 37, 5])
def test_ranks_split_each_global_batch(monkeypatch, n):
    """Two ranks' keys are the one-process keys of the full batches, each global batch halved."""
    weights = np.linspace(0.1, 1.0, n)

    def keys(rank: int, world: int) -> list:
        _as_rank(monkeypatch, rank, world)
        base = torch.utils.data.WeightedRandomSampler(weights.tolist(), n, generator=torch.Generator().manual_seed(5))
        sampler = KeyedSampler(base, batch_size=8)
        sampler.set_epoch(3)
        out = list(sampler)
        assert len(out) == len(sampler)
        return out

    single = keys(0, 1)
    r0, r1 = keys(0, 2), keys(1, 2)
    assert len(r0) == len(r1)  # equal step counts, or the collectives would hang
    if n >= 8:
        full = n // 8 * 8
        expected = [k for b in range(0, full, 8) for k in single[b : b + 4]]
        assert r0 == expected and r1 == [k for b in range(0, full, 8) for k in single[b + 4 : b + 8]]
    else:  # fewer samples than one batch: one smaller batch per rank
        assert r0 == single[:2] and r1 == single[2:4]


def test_global_batch_must_divide(monkeypatch, smoke_cfg):
    _as_rank(monkeypatch, 0, 3)
    with pytest.raises(UserError, match=r"segment.train.batch_size: 8 is not divisible by the 3 processes"):
        preflight.check(smoke_cfg())
    with pytest.raises(UserError, match="train.batch_size"):
        distributed.per_rank_batch(8, "train.batch_size")
    _as_rank(monkeypatch, 0, 2)
    assert distributed.per_rank_batch(8, "x") == 4


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = torch.nn.Conv2d(1, 1, 1)
    assert not distributed.active()
    assert distributed.wrap(model, torch.device("cpu"), True) is model
    assert distributed.on_main(lambda: 7) == 7


def _torchrun(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "pipeline", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _segment_args(overrides: list[str]) -> list[str]:
    return ["segment", "--config", str(SMOKE_CFG), *[a for o in overrides for a in ("--set", o)]]


def _manifest(artifacts: Path) -> dict:
    (folder,) = (artifacts / "smoke").glob("segment-*/manifest.json")
    return json.loads(folder.read_text())


def _weights(artifacts: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted((artifacts / "smoke").glob("segment-*/fold*/model.pt")):
        for k, v in torch.load(path, weights_only=True).items():
            out[f"{path.parent.name}.{k}"] = v
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, smoke_overrides):
    """An uninterrupted 2-process run of the smoke segment stage (and its log)."""
    artifacts = tmp_path_factory.mktemp("ddp")
    log = artifacts / "run.log"
    proc = _torchrun(_segment_args(smoke_overrides(artifacts=artifacts)), log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return artifacts, log.read_text()


@pytest.mark.slow
def test_two_processes_match_one(ddp_run, smoke_cfg):
    from pipeline import api

    artifacts, log = ddp_run
    api.run(smoke_cfg(), "segment")  # the 1-process run (from the session cache), global batch 8 too
    one = api.manifest(smoke_cfg(), "segment")
    two = _manifest(artifacts)
    assert two["key"] == one["key"]  # the number of processes is not part of the stage key
    assert abs(two["metrics"]["oof_tgs"] - one["metrics"]["oof_tgs"]) <= TOLERANCE
    assert two["metrics"]["n_oof"] == one["metrics"]["n_oof"]
    assert log.count("fold0 epoch 1:") == 1  # rank 0 alone logs (and writes)
    assert "distributed: 2 processes, backend gloo" in log


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(ddp_run, tmp_path, smoke_overrides):
    artifacts = tmp_path / "art"
    args = _segment_args(smoke_overrides(artifacts=artifacts))
    proc = _torchrun(args, tmp_path / "first.log")
    deadline = time.time() + 300
    while not list((artifacts / "smoke").glob("segment-*/fold0/checkpoint.pt")):  # epoch 0 done
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert not list((artifacts / "smoke").glob("segment-*/manifest.json"))
    second = _torchrun(args, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "resuming fold0 at epoch 1" in (tmp_path / "second.log").read_text()
    resumed, straight = _weights(artifacts), _weights(ddp_run[0])
    assert resumed.keys() == straight.keys() and resumed
    for k, v in straight.items():
        assert torch.equal(resumed[k], v), k


def test_sync_batchnorm_keeps_what_the_network_computes(smoke_cfg):
    """timm's BatchNormAct2d (BatchNorm + activation) must stay an activation after conversion
    (torch's own converter drops it: this model's eval output then changes)."""
    from pipeline.training.segmentation import build_model

    cfg = smoke_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.segment, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)["mask"]
        converted = distributed.sync_batchnorm(model)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
        torch.testing.assert_close(converted(x)["mask"], before)
