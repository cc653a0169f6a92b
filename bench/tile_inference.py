"""Sliding-window inference speed: tiles of several images per forward pass vs one image's tiles.

Measured here (2 CPU cores, magnetic_tile, 60 images): 0.74x at 32 tiles per pass, 0.97x at 16,
1.13x at 8, so on CPU the pipeline keeps one image per pass; on a GPU it batches `batch_size`.

Both sides run `pipeline.inference.predict.predict` in tile mode with the config's segmentation model
(random init: speed does not depend on the weights), TTA and tile size/overlap, on the first N
images of the config's train folder. tile_batch=1 is one image's tiles per pass; --batch N puts
at least N tiles of whole images in one. Sides alternate over
`--repeats` rounds on a noisy machine; prints images/s of each side and the ratio.

Run: .venv/bin/python bench/tile_inference.py [--config configs/magnetic_tile.yaml] [--images 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import loader as config  # noqa: E402
from pipeline.core import paths, runtime  # noqa: E402
from pipeline.core.store import ArrayStore, write_store  # noqa: E402
from pipeline.data import imageio  # noqa: E402
from pipeline.data.datasets import Geometry  # noqa: E402
from pipeline.inference.predict import InferSpec, predict  # noqa: E402
from pipeline.training.segmentation import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/magnetic_tile.yaml")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    cfg = config.load(ROOT / args.config, [])
    scfg = cfg.segment
    if scfg.input.mode != "tile":
        sys.exit(f"{args.config}: segment.input.mode is {scfg.input.mode!r}; this bench is for tile mode")
    folder = paths.resolve(cfg.data.train_images)
    files = list(imageio.list_images(folder)[0].values())[: args.images]
    images = [imageio.load_image(p).array for p in files]
    with tempfile.TemporaryDirectory() as tmp:
        write_store(Path(tmp), "images", ((p.stem, im) for p, im in zip(files, images, strict=True)))
        measure(cfg, ArrayStore(Path(tmp), "images"), args)


def measure(cfg, store: ArrayStore, args) -> None:
    scfg = cfg.segment
    images = [store[i] for i in range(len(store))]
    device = runtime.pick_device(cfg.experiment)
    model = build_model(scfg, images[0].shape[2])
    geometry = Geometry.from_cfg(scfg.input)
    idx = np.arange(len(store))

    def run(batch_size: int) -> float:
        start = time.perf_counter()
        spec = InferSpec(geometry, scfg.train.tta, device, scfg.train, scfg.aux.signed, scfg.input.tile_overlap, tile_batch=batch_size)
        for _ in predict(model, store, idx, spec):
            pass
        return time.perf_counter() - start

    torch.manual_seed(0)
    run(args.batch)  # warm-up
    per_image, batched = [], []
    for _ in range(args.repeats):
        per_image.append(run(1))
        batched.append(run(args.batch))
    n = len(store)
    sizes = sorted({im.shape[:2] for im in images})
    print(
        f"{n} images ({len(sizes)} sizes, e.g. {sizes[0]} .. {sizes[-1]}), tile {scfg.input.size}, overlap {scfg.input.tile_overlap}, tta {scfg.train.tta}"
    )
    print(f"one image per batch: {n / min(per_image):.1f} img/s (best of {args.repeats})")
    print(f"tiles of several images per batch ({args.batch}): {n / min(batched):.1f} img/s")
    print(f"speed-up: {min(per_image) / min(batched):.2f}x")


if __name__ == "__main__":
    main()
