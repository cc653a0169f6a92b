"""`python -m pipeline demo-data`: generate the binary demo, or the K-class one with --classes."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.demo import binary
from pipeline.demo import multiclass as demo_multiclass


def main(argv: list[str] | None = None) -> int:
    """CLI: generate the demo dataset and print a one-line summary."""
    ap = argparse.ArgumentParser(description="Generate the synthetic TGS-like demo dataset.")
    ap.add_argument("--out", type=Path, default=None, help="default data/demo, data/demo_multiclass with --classes")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--n-train", type=int, default=None, help="default 1200 (800 with --classes)")
    ap.add_argument("--n-test", type=int, default=None, help="default 400 (300 with --classes)")
    ap.add_argument("--classes", type=int, default=1, help="K >= 2: the K-class demo (pipeline.demo.multiclass)")
    args = ap.parse_args(argv)
    if not 1 <= args.classes <= 8:
        print(f"error: --classes {args.classes}: must be 1 (the binary demo) to 8", file=sys.stderr)
        return 2
    if args.classes > 1:
        return _multiclass(args)
    t0 = time.perf_counter()
    args.out = args.out or Path("data/demo")
    try:
        s = binary.generate(args.out, seed=args.seed, n_train=args.n_train or 1200, n_test=args.n_test or 400)
    except UserError as exc:  # `python -m pipeline.demo.cli` has no outer handler
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"demo data in {args.out}: train={s['n_train']} (empty {s['train_empty_share']:.1%}) "
        f"test={s['n_test']} (empty {s['test_empty_share']:.1%}) "
        f"mean coverage {s['train_mean_coverage_nonempty']:.2f} "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _multiclass(args: argparse.Namespace) -> int:
    out = args.out or Path("data/demo_multiclass")
    try:
        s = demo_multiclass.generate(out, k=args.classes, seed=args.seed, n_train=args.n_train or 800, n_test=args.n_test or 300)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(demo_multiclass.summary(out, s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
