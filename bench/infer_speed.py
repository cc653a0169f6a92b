"""CPU test inference speed of the tgs_salt model: `pipeline.inference.predict.predict` at 101 px with flip TTA.

Budget (issue 19): at least 200 img/s on this machine (2 cores) for the tgs_salt config's model
(EfficientNet-Lite0 U-Net with the thin decoder, distance head and empty-mask head; 101 px tiles
reflect-padded to 128; TTA none + hflip; bf16 autocast where the CPU has it). The model has random
weights: speed does not depend on them. Variants run side by side in one process, in alternating
rounds (the machine is noisy), and print img/s and the ratio to the pipeline's default:
  default        what the ensemble stage runs (batch 32)
  batch64/128    larger inference batches
  fp32           bf16 autocast off
  threads1       one torch thread (what each of two parallel processes would get)
  compiled       experiment.compile: true (torch.compile, weights frozen); the warm-up batch
                 compiles (its time is printed), the timed pass reuses the compiled code

Run: .venv/bin/python bench/infer_speed.py [--config configs/tgs_salt.yaml] [--images 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.core import runtime  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.inference.predict import predict  # noqa: E402
from pipeline.training.segmentation import build_model, infer_spec  # noqa: E402


def _variants(cfg, device) -> dict:
    base = infer_spec(cfg.segment, device, cfg.segment.train.tta)
    fp32 = dataclasses.replace(cfg.segment.train, bf16="off")
    return {
        "default": (base, 0),
        "batch64": (dataclasses.replace(base, batch_size=64), 0),
        "batch128": (dataclasses.replace(base, batch_size=128), 0),
        "fp32": (dataclasses.replace(base, tcfg=fp32), 0),
        "threads1": (base, 1),
        "compiled": (dataclasses.replace(base, compile=True), 0),  # experiment.compile: true
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tgs_salt.yaml")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = api.load_config(args.config, [f"experiment.artifacts={tmp}", "segment.model.encoder_weights=null"])
        images = ArrayStore(api.run(cfg, "ingest"), "images")
        device = runtime.pick_device(cfg.experiment)
        threads = torch.get_num_threads()
        model = build_model(cfg.segment, images[0].shape[2], cfg.classify.seg_head)
        indices = np.arange(min(args.images, len(images)))
        variants = _variants(cfg, device)
        seconds, warmup = dict.fromkeys(variants, 0.0), {}
        for _ in range(args.repeats):
            for name, (spec, n_threads) in variants.items():
                torch.set_num_threads(n_threads or threads)
                warm = time.perf_counter()
                list(predict(model, images, indices[: spec.batch_size], spec))  # warm-up (compiles)
                warmup[name] = max(warmup.get(name, 0.0), time.perf_counter() - warm)
                start = time.perf_counter()
                for _ in predict(model, images, indices, spec):
                    pass
                seconds[name] += time.perf_counter() - start
        torch.set_num_threads(threads)
    n = len(indices) * args.repeats
    print(
        f"tgs_salt model, {len(indices)} tiles x {args.repeats} rounds, TTA {list(cfg.segment.train.tta)}, "
        f"bf16 autocast {runtime.cpu_has_bf16()}, {threads} threads, size {cfg.segment.input.size} ({cfg.segment.input.mode})"
    )
    for name, s in seconds.items():
        print(f"  {name:<10} {n / s:7.1f} img/s   {seconds['default'] / s:5.2f}x default   (first batch {warmup[name]:.1f} s)")
    for name in ("default", "compiled"):
        rate = n / seconds[name]
        print(f"budget >= 200 img/s, {name}: {rate:.0f} img/s, {'met' if rate >= 200 else 'NOT met'}")


if __name__ == "__main__":
    main()
