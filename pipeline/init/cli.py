"""`python -m pipeline init ...`: its own options (the stage commands share another parser)."""

from __future__ import annotations

import argparse

from pipeline.init.make import InitArgs, init


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline init",
        description="Fingerprint a dataset and write a config sized to a time budget on this machine (never overwrites a file).",
    )
    p.add_argument("--train-images", required=True, metavar="DIR")
    masks = p.add_mutually_exclusive_group(required=True)
    masks.add_argument("--train-masks", metavar="DIR", help="binary masks or, with --classes, label images (pixel value = class index)")
    masks.add_argument(
        "--train-rle", metavar="CSV", help="Kaggle RLE CSV (id, rle_mask; with --classes the long layout ImageId, ClassId, EncodedPixels)"
    )
    p.add_argument("--test-images", metavar="DIR", help="default: the train images stand in (a dry run)")
    p.add_argument("--metadata", action="append", default=[], metavar="CSV", help="a CSV joined by id (repeatable)")
    p.add_argument("--classes", default="", help="K > 1 class names in class-index order, comma-separated")
    p.add_argument("--budget", required=True, help="wall time for run_all.sh: 90m, 2h, 1h30m, 3600")
    p.add_argument("--metric", choices=["tgs", "dice", "iou"], default=None, help="the leaderboard's metric (default dice)")
    p.add_argument("--out", required=True, metavar="YAML", help="the config to write (its NAME.fingerprint.json goes beside it)")
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    classes = [c.strip() for c in a.classes.split(",") if c.strip()]
    result = init(InitArgs(a.train_images, a.out, a.budget, a.train_masks, a.train_rle, a.test_images, a.metadata, classes, a.metric))
    e = result["estimate"]
    print(f"wrote {result['config']} and {result['fingerprint']}")
    print("estimated seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in e.items()))
    for c in result["plan"].choices:
        print(f"  {c.key} = {c.value}: {c.reason}")
    return 0
