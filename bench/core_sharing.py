"""Two jobs side by side on the same cores: how much each slows down (issue 36).

Runs each workload alone, then both at once in two processes, and prints each one's wall time
and its slowdown (side by side / alone), for OpenMP's wait policies. A workload is what a stage
does: `lgbm` fits the scorer's LightGBM regressor (pipeline.postprocessing.score_predictor)
repeatedly, `train` takes training steps of a small U-Net. With OpenMP threads that spin while
they wait (`active`, or libgomp's default spin), a job that runs many short parallel regions
(LightGBM) loses its cores to the other job's spinning threads and slows by far more than 2x;
with `passive` threads sleep, and each job slows roughly in proportion to the cores it shares.

    .venv/bin/python bench/core_sharing.py [--policies default,passive] [--lgbm-fits 12] [--train-steps 12]

`default` leaves OMP_WAIT_POLICY unset *and* skips the pipeline's own default (the behaviour
before issue 36); `pipeline` imports the pipeline first, as a stage does (its default policy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lgbm(n: int) -> None:
    """The scorer's regressor (its defaults, LIGHTGBM_THREADS threads) fitted n times."""
    import lightgbm as lgb
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 30))
    y = x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(scale=0.1, size=len(x))
    for seed in range(n):
        params = {
            "n_estimators": 100,
            "num_leaves": 31,
            "random_state": seed,
            "n_jobs": int(os.environ.get("LIGHTGBM_THREADS", "2")),
            "verbose": -1,
        }
        lgb.LGBMRegressor(deterministic=True, force_col_wise=True, **params).fit(x, y)


def _train(n: int) -> None:
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, decoder_channels=(128, 64, 32, 16, 8))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x, y = torch.randn(16, 3, 96, 96), (torch.rand(16, 1, 96, 96) > 0.5).float()
    for _ in range(n):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()


def child(workload: str, n: int, policy: str) -> None:
    """One job (run in its own process): the libraries are imported under `policy`."""
    if policy == "pipeline":
        import pipeline  # noqa: F401  (sets the pipeline's OpenMP defaults before torch loads)
    (_lgbm if workload == "lgbm" else _train)(1)  # warm-up: imports, first allocations
    start = time.perf_counter()
    (_lgbm if workload == "lgbm" else _train)(n)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PIPELINE_OMP_DEFAULTS")}
    if policy in ("active", "passive"):
        env["OMP_WAIT_POLICY"] = policy.upper()
    if policy.startswith("spin"):  # libgomp: spin this many times, then sleep
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin")
    if policy != "pipeline":
        env["PIPELINE_OMP_DEFAULTS"] = "0"  # as before issue 36: the pipeline sets no policy
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start(workload: str, n: int, policy: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", workload, "--n", str(n), "--policies", policy]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env(policy))


def _seconds(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def measure(policy: str, jobs: dict[str, int]) -> dict[str, tuple[float, float]]:
    """{workload: (alone s, side by side s)} under `policy`."""
    alone = {w: _seconds(_start(w, n, policy)) for w, n in jobs.items()}
    procs = {w: _start(w, n, policy) for w, n in jobs.items()}
    together = {w: _seconds(p) for w, p in procs.items()}
    return {w: (alone[w], together[w]) for w in jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--policies", default="default,pipeline", help="comma list of default, active, passive, spinN (GOMP_SPINCOUNT=N), pipeline"
    )
    parser.add_argument("--lgbm-fits", type=int, default=12)
    parser.add_argument("--train-steps", type=int, default=12)
    parser.add_argument("--lgbm-threads", type=int, default=2, help="n_jobs of the LightGBM fits")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.policies)
        return
    jobs = {"lgbm": args.lgbm_fits, "train": args.train_steps}
    os.environ["LIGHTGBM_THREADS"] = str(args.lgbm_threads)
    print(f"cores: {os.cpu_count()}; jobs: {jobs}")
    print(f"{'policy':<9} {'workload':<6} {'alone s':>8} {'side by side s':>15} {'slowdown':>9}")
    for policy in args.policies.split(","):
        for w, (alone, together) in measure(policy, jobs).items():
            print(f"{policy:<9} {w:<6} {alone:>8.1f} {together:>15.1f} {together / alone:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
