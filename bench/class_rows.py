"""Per-class figures of a K-class segment artifact's OOF rows that the mean over (image, class)
pairs hides: with many empty rows (an image without the class scores 1 when nothing is
predicted), the Dice on the rows whose image holds the class, and the share of empty rows
predicted empty, at the 0.5 pixel threshold without post-processing.

Run: .venv/bin/python bench/class_rows.py SEGMENT_DIR INGEST_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, like the other bench scripts

from pipeline.core.fileio import read_csv  # noqa: E402
from pipeline.data.classrows import read_rows  # noqa: E402


def main(segment: str, ingest: str) -> None:
    rows = read_rows(Path(segment) / "oof_scores.csv")
    table = read_csv(Path(ingest) / "train.csv").set_index("id")
    rows["present"] = [table.at[i, f"coverage_{c}"] > 0 for i, c in zip(rows["id"], rows["class"], strict=True)]
    print("| class | images with it | Dice where present | empty rows kept empty | all rows |")
    print("|---|---|---|---|---|")
    for c, g in rows.groupby("class", sort=False):
        pos, neg = g[g["present"]], g[~g["present"]]
        print(f"| {c} | {len(pos)} | {pos['dice'].mean():.4f} | {(neg['dice'] == 1).mean():.4f} | {g['dice'].mean():.4f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
