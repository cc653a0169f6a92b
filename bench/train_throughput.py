"""Training-loop throughput: the pipeline's loop vs a minimal hand-written PyTorch loop.

Pipeline side: `pipeline.train.train_epoch` over the real `SegDataset` on the ingest
`ArrayStore`s, with the config's augmentations, distance target, oversampling sampler
(`make_loader`), the `ScheduledLoss` + distance-loss task (`seg_task`), the cosine schedule,
and the configured autocast / channels_last.
Baseline side: a fresh copy of the same model (same initial weights), the same images and
masks pre-built as tensors in memory (padded/resized by the same Geometry, no augmentation),
plain BCE + Dice from the same loss registry, the same autocast / channels_last settings,
the same batch size and number of batches. Epochs alternate (baseline, pipeline, ...) after
a two-batch warm-up of each, since the machine is noisy; the ratio is taken over the totals.

Run:  .venv/bin/python bench/train_throughput.py [--config configs/demo.yaml]
        [--set segment.input.mode=pad --set segment.input.size=128] [--images 256] [--repeats 2]
      add --profile to print the top cProfile costs of one extra pipeline epoch.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import config, paths, runtime  # noqa: E402
from pipeline.cache import run_stage  # noqa: E402
from pipeline.datasets import Geometry, SegDataset, build_augment, sample_weights, to_tensor  # noqa: E402
from pipeline.losses import get_loss  # noqa: E402
from pipeline.stages.segment import build_model, seg_task  # noqa: E402
from pipeline.store import ArrayStore  # noqa: E402
from pipeline.train import _scheduler, make_loader, train_epoch  # noqa: E402


def load_data(cfg, n: int):
    """Ingest (cached) -> image/mask stores, the first n positions and their coverage."""
    if cfg.data.train_images and not paths.resolve(cfg.data.train_images).is_dir():
        subprocess.run([sys.executable, "-m", "pipeline", "demo-data"], cwd=ROOT, check=True)
    folder, _ = run_stage(cfg, "ingest")
    images, masks = ArrayStore(folder, "images"), ArrayStore(folder, "masks")
    table = pd.read_csv(folder / "train.csv", dtype={"id": str}, keep_default_na=False)
    coverage = table.set_index("id").loc[images.ids, "coverage"].to_numpy()
    idx = np.arange(min(n, len(images)))
    return images, masks, idx, coverage[idx]


def baseline_epoch(model, opt, x_all, m_all, bs, n_batches, tcfg, device, gen) -> int:
    """Minimal loop over in-memory tensors; returns images processed."""
    bce, dice = get_loss("bce"), get_loss("dice")
    model.train()
    perm = torch.randperm(len(x_all), generator=gen)
    for b in range(n_batches):
        sel = perm[b * bs : (b + 1) * bs]
        x, m = x_all[sel].to(device), m_all[sel].to(device)
        if tcfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(device, tcfg):
            logits = model(x)["mask"]
        logits = logits.float()
        loss = bce(logits, m) + dice(logits, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    return n_batches * bs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    cfg_path = Path(args.config) if Path(args.config).exists() else paths.resolve(args.config)
    cfg = config.load(cfg_path, args.set)
    scfg, tcfg = cfg.segment, cfg.segment.train
    device = runtime.pick_device(cfg.experiment)
    images, masks, idx, cov = load_data(cfg, args.images)
    geometry = Geometry.from_cfg(scfg.input)
    bs, seed = tcfg.batch_size, cfg.experiment.seed

    torch.manual_seed(seed)
    model_p = build_model(scfg, images[0].shape[2])
    model_b = copy.deepcopy(model_p)  # same architecture, same initial weights
    for m in (model_p, model_b):
        m.to(device)
        if tcfg.channels_last:
            m.to(memory_format=torch.channels_last)

    # Pipeline: real dataset, augmentation, oversampling sampler, task loss, schedule.
    ds = SegDataset(images, masks, idx, geometry, build_augment(tcfg.augment), scfg.aux.signed, seed)
    loader = make_loader(ds, tcfg, sample_weights(cov, tcfg.oversample), torch.Generator().manual_seed(seed))
    task = seg_task(scfg, lambda m: {"score": 0.0})
    opt_p = torch.optim.AdamW(model_p.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = _scheduler(opt_p, tcfg, len(loader) * (args.repeats + 2))
    warm_ds = SegDataset(images, masks, idx[: 2 * bs], geometry, build_augment(tcfg.augment), scfg.aux.signed, seed)
    warm = make_loader(warm_ds, tcfg, None, torch.Generator().manual_seed(seed))

    # Baseline: the same images/masks, same geometry, built once, in memory.
    x_all = torch.stack([to_tensor(geometry.forward(np.asarray(images[i]))) for i in idx])
    m_all = torch.stack(
        [torch.from_numpy((geometry.forward(np.asarray(masks[i]), cv2.INTER_NEAREST)[..., 0] > 0).astype(np.float32))[None] for i in idx]
    )
    opt_b = torch.optim.AdamW(model_b.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    gen_b = torch.Generator().manual_seed(seed)
    n_batches = len(loader)

    def run_pipeline(ld) -> int:
        train_epoch(model_p, ld, task, opt_p, sched, tcfg, device, 0)
        return len(ld) * bs

    # Warm-up (excluded): two batches each.
    baseline_epoch(model_b, opt_b, x_all, m_all, bs, 2, tcfg, device, gen_b)
    run_pipeline(warm)

    totals = {"baseline": [0.0, 0], "pipeline": [0.0, 0]}
    print(
        f"{len(idx)} images, {n_batches} batches of {bs}, input {geometry.mode} {geometry.size}, "
        f"device {device}, threads {torch.get_num_threads()}, autocast {runtime.autocast(device, tcfg)!r}"
    )
    for r in range(args.repeats):
        for name in ("baseline", "pipeline"):
            t0 = time.perf_counter()
            n = (
                baseline_epoch(model_b, opt_b, x_all, m_all, bs, n_batches, tcfg, device, gen_b)
                if name == "baseline"
                else run_pipeline(loader)
            )
            dt = time.perf_counter() - t0
            totals[name][0] += dt
            totals[name][1] += n
            print(f"  round {r} {name:8s} {n / dt:7.1f} img/s ({dt:.2f}s)")
    ips = {k: n / t for k, (t, n) in totals.items()}
    print(
        f"baseline {ips['baseline']:.1f} img/s | pipeline {ips['pipeline']:.1f} img/s | "
        f"ratio pipeline/baseline {ips['pipeline'] / ips['baseline']:.3f} (goal >= 0.90)"
    )
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average {' '.join(load)}")

    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run_pipeline, loader)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
