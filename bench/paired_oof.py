"""Two segment runs compared on the same OOF images: each side's mean, the paired difference and
its standard error, over all shared images and per fold.

A single fold's mAP has a standard error near 0.013 on 640 tiles, and two seeds of one recipe
differ by about that much; the per-image difference between two models on the same tiles varies
far less, so only the paired figure can say whether a recipe change moved the score. The
standard error treats rows as independent: (image, class) rows of one image and touching tiles
are not, and a training run's seed moves whole folds (docs/results.md, issue 18), so it is a
floor on the uncertainty of a difference between two trainings, not the whole of it.

Run: .venv/bin/python bench/paired_oof.py A B [--metric tgs|dice|auto|...] [--names new old] [--subset CSV]
  A, B: segment artifact folders (their oof_scores.csv), scorer artifact folders (their
  nested_scores.csv: each image's held-out score under every policy; --metric auto is the
  final nested CV), or such CSV files. With --solution MASKS: submit artifact folders or
  submission CSVs, each image scored against the hidden solution's masks (the demo's
  data/demo/test_solution/masks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.submission.binary import submission_scores  # noqa: E402


def _hidden(path: str, solution: str, metric: str) -> pd.DataFrame:
    """A submission's per-image metric against the solution masks (one pseudo-fold, 0)."""
    p = Path(path) / "submission.csv" if Path(path).is_dir() else Path(path)
    scores = submission_scores(p, solution, metric)
    return pd.DataFrame({"id": scores.index.astype(str), "fold": 0, metric: scores.to_numpy()})


def _scores(path: str) -> pd.DataFrame:
    p = Path(path)
    if p.is_dir():
        p = next((p / f for f in ("oof_scores.csv", "nested_scores.csv") if (p / f).is_file()), p / "oof_scores.csv")
    if not p.is_file():
        raise SystemExit(
            f"{p}: no such file (a segment artifact folder holds oof_scores.csv, a scorer's nested_scores.csv;"
            " a scorer cached before it was written: rerun it with --force)"
        )
    return pd.read_csv(p, dtype={"id": str})


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean paired difference a - b and its standard error."""
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--metric", default="tgs", help="a column of both files: tgs, dice, or a scorer policy (auto, grid, ...)")
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    ap.add_argument("--any-fold", action="store_true", help="pair images by id alone (runs with other folds); per-fold rows by A's folds")
    ap.add_argument(
        "--subset", help="a CSV with an id column (e.g. a mosaic artifact's neighbours.csv): a row for those images and the rest"
    )
    ap.add_argument("--solution", help="A and B are submissions (CSV or submit artifact folder), scored per image against these masks")
    args = ap.parse_args()
    if args.solution:
        a, b = (_hidden(p, args.solution, args.metric) for p in (args.a, args.b))
    else:
        a, b = _scores(args.a), _scores(args.b)
    if args.any_fold:
        b = b.drop(columns="fold")
    both = a.merge(b, on=["id"] if args.any_fold else ["id", "fold"], suffixes=("_a", "_b"))
    if both.empty:
        raise SystemExit("the two runs share no OOF image")
    if f"{args.metric}_a" not in both.columns:
        raise SystemExit(f"--metric {args.metric}: not a column of both files")
    na, nb = args.names
    print(f"| images | {na} | {nb} | {na} - {nb} | SE | difference / SE |")
    print("|---|---|---|---|---|---|")
    groups = [("all", both)] + [(f"fold {k}", g) for k, g in both.groupby("fold")]
    if args.subset:
        listed = both["id"].isin(set(pd.read_csv(args.subset, dtype={"id": str})["id"]))
        groups += [("listed", both[listed]), ("not listed", both[~listed])]
    for label, g in groups:
        a, b = g[f"{args.metric}_a"].to_numpy(), g[f"{args.metric}_b"].to_numpy()
        d, se = paired(a, b)
        ratio = f"{d / se:+.1f}" if se > 0 else "identical" if d == 0 else "n/a"
        print(f"| {label} ({len(g)}) | {a.mean():.4f} | {b.mean():.4f} | {d:+.4f} | {se:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
