"""Training-loop throughput: the pipeline's loop vs a minimal hand-written PyTorch loop.

Pipeline: `pipeline.training.step.train_epoch` over the real `SegDataset` on the ingest ArrayStores, with
the config's augmentations, distance target, oversampling sampler (`make_loader`), the
ScheduledLoss + distance-loss task (`seg_task`), cosine schedule, autocast and channels_last.
Baseline: a copy of the same model (same init), the same images/masks pre-built in memory by the
same Geometry (no augmentation), plain BCE + Dice, the same autocast/channels_last/batch size.
The machine is noisy (another process taking a core can slow a 2-thread torch step many times
over), so the sides alternate batch by batch: one baseline step runs after each pipeline step,
timed apart (pipeline: loading + step). Prints img/s of each side, the ratio pipeline/baseline
of the totals and the median per-batch ratio (robust to load spikes); two warm-up batches per
side are not timed. (With num_workers > 0 workers would prefetch during baseline steps.)

Run: .venv/bin/python bench/train_throughput.py [--config configs/demo.yaml] [--images 256]
       [--repeats 2 (pipeline epochs)] [--set segment.input.mode=pad --set segment.input.size=128]
       [--profile (cProfile one more pipeline epoch)]
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

from pipeline import api  # noqa: E402
from pipeline.config import loader as config  # noqa: E402
from pipeline.core import paths, runtime  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.data.datasets import Geometry, SegDataset, build_augment, sample_weights, to_tensor  # noqa: E402
from pipeline.modeling.losses import get_loss  # noqa: E402
from pipeline.training.loop import make_loader  # noqa: E402
from pipeline.training.schedules import build as build_scheduler  # noqa: E402
from pipeline.training.segmentation import build_model, seg_task  # noqa: E402
from pipeline.training.step import train_epoch  # noqa: E402


def load_data(cfg, n: int):
    """Ingest (cached) -> image/mask stores, the first n positions and their coverage."""
    if cfg.data.train_images and not paths.resolve(cfg.data.train_images).is_dir():
        subprocess.run([sys.executable, "-m", "pipeline", "demo-data"], cwd=ROOT, check=True)
    folder = api.run(cfg, "ingest")
    images, masks = ArrayStore(folder, "images"), ArrayStore(folder, "masks")
    table = pd.read_csv(folder / "train.csv", dtype={"id": str}, keep_default_na=False)
    coverage = table.set_index("id").loc[images.ids, "coverage"].to_numpy()
    idx = np.arange(min(n, len(images)))
    return images, masks, idx, coverage[idx]


def baseline_steps(model, opt, x_all, m_all, bs, tcfg, device, gen):
    """Endless minimal training loop over in-memory tensors; yields the seconds of each step."""
    bce, dice = get_loss("bce"), get_loss("dice")
    model.train()
    while True:
        perm = torch.randperm(len(x_all), generator=gen)
        for b in range(len(x_all) // bs):
            t0 = time.perf_counter()
            sel = perm[b * bs : (b + 1) * bs]
            x = x_all[sel].to(device, memory_format=torch.channels_last if tcfg.channels_last else torch.preserve_format)
            m = m_all[sel].to(device)
            with runtime.autocast(device, tcfg):
                logits = model(x)["mask"].float()
            loss = bce(logits, m) + dice(logits, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            yield time.perf_counter() - t0


class Paired:
    """The pipeline's loader, with one baseline step run (and timed apart) after each batch."""

    def __init__(self, loader, steps) -> None:
        self.loader, self.steps, self.pipe, self.base = loader, steps, [], []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        t0 = time.perf_counter()
        for batch in self.loader:
            yield batch  # train_epoch runs its step, then asks for the next batch
            self.pipe.append(time.perf_counter() - t0)
            self.base.append(next(self.steps))
            t0 = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    for name, default in (("--images", 256), ("--repeats", 2)):
        ap.add_argument(name, type=int, default=default)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    # Whole inputs on both sides: progressive crops (tgs_salt.yaml) would time a smaller step.
    sets = ["segment.train.progressive={crop: 0, until_epoch: 0}", *args.set]
    cfg = config.load(Path(args.config) if Path(args.config).exists() else paths.resolve(args.config), sets)
    scfg, tcfg = cfg.segment, cfg.segment.train
    device = runtime.pick_device(cfg.experiment)
    images, masks, idx, cov = load_data(cfg, args.images)
    geometry, bs, seed = Geometry.from_cfg(scfg.input), tcfg.batch_size, cfg.experiment.seed

    runtime.seed_everything(seed)  # as train_fold does before building the model
    model_p = build_model(scfg, images[0].shape[2])
    model_b = copy.deepcopy(model_p)  # same architecture, same initial weights
    for m in (model_p, model_b):
        m.to(device, memory_format=torch.channels_last if tcfg.channels_last else torch.preserve_format)

    # Pipeline: real dataset, augmentation, oversampling sampler, task loss, schedule.
    def loader_for(ix, weights):
        ds = SegDataset(images, masks, ix, geometry, build_augment(tcfg.augment, seed), scfg.aux.signed, seed)
        return make_loader(ds, tcfg, weights, torch.Generator().manual_seed(seed))

    loader, warm = loader_for(idx, sample_weights(cov, tcfg.oversample)), loader_for(idx[: 2 * bs], None)
    task = seg_task(scfg, lambda m: {"score": 0.0})
    opt_p = torch.optim.AdamW(model_p.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = build_scheduler(opt_p, tcfg, len(loader), args.repeats + 2)

    # Baseline: the same images/masks, same geometry, built once, in memory.
    x_all = torch.stack([to_tensor(geometry.forward(np.asarray(images[i]))) for i in idx])
    m_np = np.stack([geometry.forward(np.asarray(masks[i]), cv2.INTER_NEAREST)[..., :1] > 0 for i in idx])
    m_all = torch.from_numpy(m_np).permute(0, 3, 1, 2).float().contiguous()
    opt_b = torch.optim.AdamW(model_b.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    steps = baseline_steps(model_b, opt_b, x_all, m_all, bs, tcfg, device, torch.Generator().manual_seed(seed))

    next(steps), next(steps)  # warm-up, not timed
    train_epoch(model_p, warm, task, opt_p, sched, tcfg, device, 0)
    amp = getattr(runtime.autocast(device, tcfg), "fast_dtype", "off")
    print(f"{len(idx)} images, batch {bs}, {geometry}, {device}:{torch.get_num_threads()} threads, autocast {amp}, cl={tcfg.channels_last}")
    pipe, base = [], []
    for r in range(args.repeats):
        paired = Paired(loader, steps)
        train_epoch(model_p, paired, task, opt_p, sched, tcfg, device, 0)
        pipe, base = pipe + paired.pipe, base + paired.base
        b_ips, p_ips = bs * len(paired.base) / sum(paired.base), bs * len(paired.pipe) / sum(paired.pipe)
        print(f"  epoch {r}: baseline {b_ips:7.1f} img/s | pipeline {p_ips:7.1f} img/s")
    ips_b, ips_p = bs * len(base) / sum(base), bs * len(pipe) / sum(pipe)
    med = float(np.median(np.array(base) / np.array(pipe)))
    print(f"baseline {ips_b:.1f} img/s | pipeline {ips_p:.1f} img/s | pipeline/baseline {ips_p / ips_b:.3f} (goal >= 0.90)")
    print(f"median per-batch ratio {med:.3f} | load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")

    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(train_epoch, model_p, loader, task, opt_p, sched, tcfg, device, 0)
        for key, n in (("cumulative", 25), ("tottime", 20)):
            pstats.Stats(prof).sort_stats(key).print_stats(n)


if __name__ == "__main__":
    main()
