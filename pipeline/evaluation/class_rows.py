"""What a mean over (image, class) rows hides. With K classes most rows are empty (an image
without the class scores 1 when nothing is predicted there), so a model that finds no defect of
some class can still score near an all-empty submission. Per class: the score on the rows whose
image holds the class, the false-positive rate on the rows whose image does not, and the mean;
beside them the all-empty submission's score, the floor any result must beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_rows(scores: np.ndarray, present: np.ndarray, row_class: np.ndarray, names: Sequence[str]) -> dict:
    """{class: {images, present, absent_fp, mean, all_empty}} of per-row scores (Dice or TGS:
    1 on an empty row predicted empty, 0 on one predicted non-empty)."""
    scores, present = np.asarray(scores, dtype=float), np.asarray(present, dtype=bool)
    out = {}
    for c, name in enumerate(names):
        at = np.asarray(row_class) == c
        pos, neg = scores[at & present], scores[at & ~present]
        out[str(name)] = {
            "images": int(len(pos)),
            "present": round(float(pos.mean()), 4) if len(pos) else None,
            "absent_fp": round(float((neg < 1).mean()), 4) if len(neg) else None,
            "mean": round(float(scores[at].mean()), 4),
            "all_empty": round(float((~present[at]).mean()), 4),
        }
    return out


def all_empty(present: np.ndarray) -> float:
    """The score of a submission that predicts nothing: the share of empty rows."""
    return round(float(1 - np.asarray(present, dtype=bool).mean()), 4)
