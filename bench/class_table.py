"""Per-class rows of K-class scorer runs, and two runs compared paired on the same rows (issue 35).

A mean over (image, class) rows hides a model that draws nothing of a class: most rows are
empty. For each class this prints the images that hold it, the held-out score on those rows
(Dice where present), the false-positive rate on the rows of images without it, the class mean,
and the all-empty submission's score; with two runs, the paired difference of each (on the
same rows) with its standard error. Every figure is the scorer's nested CV (`nested_scores.csv`:
each row's held-out score under every policy; `auto` is the final one).

Run: .venv/bin/python bench/class_table.py SCORER_DIR [SCORER_DIR_B] --ingest INGEST_DIR [--policy auto] [--names new old]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.tables import read_train_table, train_classes  # noqa: E402
from pipeline.evaluation.oof import paired  # noqa: E402


def rows(scorer: Path, ingest: Path, policy: str) -> pd.DataFrame:
    """key, image, class, present, score (held out under `policy`) of a scorer artifact."""
    classes = train_classes(ingest)
    table = pd.read_csv(scorer / "nested_scores.csv", dtype={"id": str})
    cls = [next(c for c in classes if k.endswith(f"_{c}")) for k in table["id"]]
    image = [k[: -len(c) - 1] for k, c in zip(table["id"], cls, strict=True)]
    cov = read_train_table(ingest).set_index("id")
    present = [cov.at[i, f"coverage_{c}"] > 0 for i, c in zip(image, cls, strict=True)]
    return pd.DataFrame({"key": table["id"], "image": image, "class": cls, "present": present, "score": table[policy]})


def _cell(values: np.ndarray) -> str:
    return "-" if len(values) == 0 else f"{values.mean():.4f}"


def one(t: pd.DataFrame, name: str) -> None:
    print(
        f"\n{name}\n\n| class | images with it | score where present | FP rate where absent | mean | all-empty |\n|---|---|---|---|---|---|"
    )
    for c, g in t.groupby("class", sort=False):
        pos, neg = g[g["present"]]["score"].to_numpy(), g[~g["present"]]["score"].to_numpy()
        print(
            f"| {c} | {len(pos)} | {_cell(pos)} | {_cell((neg < 1).astype(float))} | {g['score'].mean():.4f} | {(~g['present']).mean():.4f} |"
        )
    print(
        f"| all rows | {int(t['present'].sum())} | {_cell(t[t['present']]['score'].to_numpy())} | {_cell((t[~t['present']]['score'] < 1).astype(float).to_numpy())} | {t['score'].mean():.4f} | {(~t['present']).mean():.4f} |"
    )


def compare(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> None:
    both = a.merge(b[["key", "score"]], on="key", suffixes=("_a", "_b"))
    print(f"\n{names[0]} - {names[1]}, paired on {len(both)} rows (mean difference ± standard error)\n")
    print("| class | where present | where absent | all rows |\n|---|---|---|---|")
    groups = [*both.groupby("class", sort=False), ("all rows", both)]
    for c, g in groups:
        cells = []
        for part in (g[g["present"]], g[~g["present"]], g):
            d = (part["score_a"] - part["score_b"]).to_numpy()
            mean, se = paired(d) if len(d) else (float("nan"), float("nan"))
            cells.append(f"{mean:+.4f} ± {se:.4f}")
        print(f"| {c} | {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--ingest", type=Path, required=True)
    ap.add_argument("--policy", default="auto")
    ap.add_argument("--names", nargs=2, default=("A", "B"))
    args = ap.parse_args(argv)
    tables = [rows(r, args.ingest, args.policy) for r in args.runs[:2]]
    for t, name in zip(tables, args.names, strict=False):
        one(t, f"{name} ({args.policy})")
    if len(tables) == 2:
        compare(*tables, tuple(args.names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
