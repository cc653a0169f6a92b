"""CPU throughput of the tgs_salt recipe: its training step and its test inference, each against
variants, side by side in one process (issue 20).

Training: the config's model (U-Net, EfficientNet-Lite0, thin decoder, distance and empty-mask
heads) and loss (`segmentation.seg_task`, the first loss phase), AdamW, one step = forward,
fp32 loss, backward, optimizer step, on batches the pipeline's own dataset built beforehand (the
data side is timed apart, as `loader`). Every variant starts from the same weights; they run in
alternating rounds (the machine is noisy, a job elsewhere can slow a round several times over),
the first round is warm-up (for `compiled` it includes the compile, printed apart), and the
figure is the median over the other rounds. Variants:
  recipe        today's recipe: 128 px (101 reflect-padded), batch 32, bf16 autocast, channels_last
  fp32 / bf16_nchw / fp32_nchw   autocast off and/or channels_last off
  batch64       the same per-image work in batches of 64
  threads1      one torch thread (what each of two processes on this machine would get)
  compiled      torch.compile (inductor) of the model; compile time counted apart
  crop96/crop64 random same-scale crops of the padded tile: the early epochs of
                `train.progressive` (`datasets.crop_batch`, done before timing: label and coverage
                recomputed on the window, the distance target cropped)
  hypercolumn / hypercolumn_crop64   `segment.model.head: hypercolumn` on the whole tile and on
                the 64 px windows (issue 17: its comparison with the plain head at equal CPU time)
  loader        the pipeline's DataLoader alone (augmentation, distance target, collation)

Inference (`predict.predict` over the ingested tiles, flip TTA, what OOF and test maps run):
  default, batch64, batch16, fp32, threads1, tta_batched (the views in one forward pass),
  compiled (experiment.compile), compiled+tta_batched, compiled+batch64. Compiled variants are
  compiled anew each round; the first-batch column is the last round's (a warm inductor cache).

Run: .venv/bin/python bench/cpu_throughput.py [--config configs/tgs_salt.yaml] [--rounds 4]
       [--steps 6] [--images 512] [--only train|infer] [--variants recipe,crop64,...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.core import runtime  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.data.datasets import Geometry, SegDataset, build_augment, crop_batch  # noqa: E402
from pipeline.data.loader import make_loader, set_epoch  # noqa: E402
from pipeline.inference.predict import compiled, predict  # noqa: E402
from pipeline.training.segmentation import SEG_HEAD_WEIGHT, build_model, infer_spec, seg_task  # noqa: E402


@dataclasses.dataclass(frozen=True)
class TrainVariant:
    bf16: bool = True
    channels_last: bool = True
    batch: int = 32
    threads: int = 0  # 0: the process's default
    compile: bool = False
    crop: int = 0  # 0: the full padded tile
    head: str | None = None  # segment.model.head of the variant's model


TRAIN_VARIANTS = {
    "recipe": TrainVariant(),
    "fp32": TrainVariant(bf16=False),
    "bf16_nchw": TrainVariant(channels_last=False),
    "fp32_nchw": TrainVariant(bf16=False, channels_last=False),
    "batch64": TrainVariant(batch=64),
    "threads1": TrainVariant(threads=1),
    "compiled": TrainVariant(compile=True),
    "crop96": TrainVariant(crop=96),
    "crop64": TrainVariant(crop=64),
    "hypercolumn": TrainVariant(head="hypercolumn"),
    "hypercolumn_crop64": TrainVariant(crop=64, head="hypercolumn"),
}


class _Trainer:
    """One variant's model, optimizer and batches; `steps(n)` returns seconds per image."""

    def __init__(self, cfg, model: torch.nn.Module, samples: list[dict], v: TrainVariant, threads: int) -> None:
        self.v, self.threads = v, v.threads or threads
        self.tcfg = dataclasses.replace(cfg.segment.train, bf16="on" if v.bf16 else "off", channels_last=v.channels_last)
        self.model = copy.deepcopy(model).train()
        if v.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if v.compile else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.task = seg_task(cfg.segment, None, SEG_HEAD_WEIGHT if cfg.classify.seg_head else 0.0)
        rng = np.random.default_rng(0)
        self.batches = []
        for start in range(0, len(samples) - v.batch + 1, v.batch):
            b = default_collate(samples[start : start + v.batch])
            self.batches.append(crop_batch(b, v.crop, [rng] * len(b["image"])) if v.crop else b)
        self.next, self.device = 0, torch.device("cpu")

    def steps(self, n: int) -> float:
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        for _ in range(n):
            batch = self.batches[self.next % len(self.batches)]
            self.next += 1
            x = batch["image"].contiguous(memory_format=torch.channels_last) if self.v.channels_last else batch["image"]
            with runtime.autocast(self.device, self.tcfg):
                out = self.net(x)
            loss, _ = self.task.loss({k: t.float() for k, t in out.items()}, batch, 0)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return (time.perf_counter() - start) / (n * self.v.batch)


def _dataset(cfg, images, masks, idx) -> SegDataset:
    """The pipeline's training dataset over `idx`, with the config's augmentations."""
    scfg = cfg.segment
    return SegDataset(images, masks, idx, Geometry.from_cfg(scfg.input), build_augment(scfg.train.augment, 0), scfg.aux.signed, 0)


def _loader_seconds(cfg, images, masks, idx, batches: int) -> float:
    """Seconds per image for the pipeline's training DataLoader alone."""
    loader = make_loader(_dataset(cfg, images, masks, idx), cfg.segment.train, None, torch.Generator().manual_seed(0))
    set_epoch(loader, 0)
    start, n = time.perf_counter(), 0
    for i, b in enumerate(loader):
        n += len(b["image"])
        if i + 1 >= batches:
            break
    return (time.perf_counter() - start) / n


def _samples(cfg, images, masks, idx) -> list[dict]:
    """The pipeline dataset's training samples (augmented), built once."""
    ds = _dataset(cfg, images, masks, idx)
    out = []
    for i in range(len(idx)):
        ds.reseed((0, i))
        out.append(ds[i])
    return out


def _model(cfg, images, head: str | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    scfg = dataclasses.replace(cfg.segment, model=dataclasses.replace(cfg.segment.model, head=head)) if head else cfg.segment
    return build_model(scfg, images[0].shape[2], cfg.classify.seg_head)


def _trainer(cfg, images, masks, idx, v: TrainVariant, threads: int) -> _Trainer:
    return _Trainer(cfg, _model(cfg, images), _samples(cfg, images, masks, idx), v, threads)


def bench_train(cfg, images, masks, args, threads: int) -> None:
    idx = np.arange(min(args.images, len(images)))
    samples = _samples(cfg, images, masks, idx)
    models = {head: _model(cfg, images, head) for head in {v.head for v in TRAIN_VARIANTS.values()}}
    chosen = {"recipe", *args.variants.split(",")} if args.variants else set(TRAIN_VARIANTS)
    trainers = {name: _Trainer(cfg, models[v.head], samples, v, threads) for name, v in TRAIN_VARIANTS.items() if name in chosen}
    per_img: dict[str, list[float]] = {name: [] for name in [*trainers, "loader"]}
    warm: dict[str, float] = {}
    for r in range(args.rounds + 1):
        for name, t in trainers.items():
            if r == 0:
                start = time.perf_counter()
                t.steps(1)
                warm[name] = time.perf_counter() - start
            steps = max(1, args.steps * 32 // t.v.batch)
            s = t.steps(steps)
            if r:
                per_img[name].append(s)
        torch.set_num_threads(threads)
        s = _loader_seconds(cfg, images, masks, idx, args.steps)
        if r:
            per_img["loader"].append(s)
    base = statistics.median(per_img["recipe"])
    print(
        f"\nTraining, {len(idx)} tiles, {args.rounds} rounds x {args.steps} batches of 32 (median), {threads} threads, bf16 autocast {runtime.cpu_has_bf16()}"
    )
    print("| variant | img/s | ratio to recipe | first step s |")
    print("|---|---|---|---|")
    for name, vals in per_img.items():
        med = statistics.median(vals)
        print(f"| {name} | {1 / med:.1f} | {base / med:.2f} | {warm.get(name, float('nan')):.1f} |")
    load = statistics.median(per_img["loader"])
    print(f"recipe with the loader in the same process: {1 / (base + load):.1f} img/s (data side {load / (base + load):.0%} of a step)")


def _infer_variants(cfg, device) -> dict:
    """name -> (spec, threads, compiled): compiled variants get the model compiled once, outside
    predict (which compiles anew per call, once per fold model in the pipeline: its compile
    time is the first-batch column)."""
    base = infer_spec(cfg.segment, device, cfg.segment.train.tta)
    fp32 = dataclasses.replace(cfg.segment.train, bf16="off")
    batched = dataclasses.replace(base, batch_tta=True)
    return {
        "default": (base, 0, False),
        "batch64": (dataclasses.replace(base, batch_size=64), 0, False),
        "batch16": (dataclasses.replace(base, batch_size=16), 0, False),
        "fp32": (dataclasses.replace(base, tcfg=fp32), 0, False),
        "threads1": (base, 1, False),
        "tta_batched": (batched, 0, False),
        "compiled": (base, 0, True),
        "compiled+tta_batched": (batched, 0, True),
        "compiled+batch64": (dataclasses.replace(base, batch_size=64), 0, True),
    }


def bench_infer(cfg, images, args, threads: int) -> None:
    device = runtime.pick_device(cfg.experiment)
    torch.manual_seed(0)
    model = build_model(cfg.segment, images[0].shape[2], cfg.classify.seg_head).eval()
    if cfg.segment.train.channels_last:
        model.to(memory_format=torch.channels_last)
    idx = np.arange(min(args.images, len(images)) // 64 * 64)  # whole batches: one compiled shape
    variants = _infer_variants(cfg, device)
    per_img: dict[str, list[float]] = {name: [] for name in variants}
    warm: dict[str, float] = {}
    nets = {}
    for _ in range(max(2, args.rounds // 2)):
        for name, (spec, n_threads, fast) in variants.items():
            torch.set_num_threads(n_threads or threads)
            if name not in nets:
                nets[name] = compiled(model) if fast else model
                start = time.perf_counter()
                list(predict(nets[name], images, idx[: spec.batch_size], spec))  # warm-up: compiles
                warm[name] = time.perf_counter() - start
            start = time.perf_counter()
            for _ in predict(nets[name], images, idx, spec):
                pass
            per_img[name].append((time.perf_counter() - start) / len(idx))
        torch._dynamo.reset()
        nets.clear()
    torch.set_num_threads(threads)
    base = statistics.median(per_img["default"])
    print(f"\nInference, {len(idx)} tiles, TTA {list(cfg.segment.train.tta)}, batch 32 unless named (median of rounds)")
    print("| variant | img/s | ratio to default | first batch s (compile) |")
    print("|---|---|---|---|")
    for name, vals in per_img.items():
        med = statistics.median(vals)
        print(f"| {name} | {1 / med:.1f} | {base / med:.2f} | {warm[name]:.1f} |")


# Thread and oneDNN settings that only take effect when the process starts: each runs the
# recipe's step in a child process (the rounds alternate between them).
ENV_VARIANTS = {
    "env default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "OMP_PROC_BIND=close OMP_PLACES=cores": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"},
    "ONEDNN_DEFAULT_FPMATH_MODE=BF16": {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
}


def child_rate(cfg, images, masks, args) -> None:
    """The recipe's training img/s in this process (the child side of `bench_env`)."""
    idx = np.arange(min(args.steps * 32 + 32, len(images)))
    trainer = _trainer(cfg, images, masks, idx, TrainVariant(), torch.get_num_threads())
    trainer.steps(1)
    print(f"RATE {1 / trainer.steps(args.steps):.3f}")


def bench_env(args, artifacts: str) -> None:
    rates: dict[str, list[float]] = {name: [] for name in ENV_VARIANTS}
    cmd = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps), "--child", artifacts]
    for _ in range(max(2, args.rounds // 2)):
        for name, env in ENV_VARIANTS.items():
            out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
            rates[name].append(float(out.split("RATE ")[-1]))
    base = statistics.median(rates["env default"])
    print(f"\nTraining step of the recipe under process-start settings, each in its own process ({args.steps} batches of 32 each)")
    print("| setting | img/s | ratio to default |")
    print("|---|---|---|")
    for name, vals in rates.items():
        print(f"| {name} | {statistics.median(vals):.1f} | {statistics.median(vals) / base:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tgs_salt.yaml")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--only", choices=["train", "infer", "env"])
    ap.add_argument("--variants", help="training variants to time beside the recipe, comma-separated (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # artifacts folder of the parent (bench_env)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = args.child or tmp
        cfg = api.load_config(args.config, [f"experiment.artifacts={artifacts}", "segment.model.encoder_weights=null"])
        folder = api.run(cfg, "ingest")
        images, masks = ArrayStore(folder, "images"), ArrayStore(folder, "masks")
        threads = torch.get_num_threads()
        if args.child:
            child_rate(cfg, images, masks, args)
            return
        if args.only in (None, "train"):
            bench_train(cfg, images, masks, args, threads)
        if args.only in (None, "env"):
            bench_env(args, artifacts)
        if args.only in (None, "infer"):
            bench_infer(cfg, images, args, threads)


if __name__ == "__main__":
    main()
