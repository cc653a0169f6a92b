"""ROC curve, AUC per fold and overall, and a TPR/FPR table by threshold, for any
image-level "mask is non-empty" probabilities (separate classifier or segmentation head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from pipeline.core import fileio


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _auc_of(g: pd.DataFrame) -> float:
    return round(safe_auc(g["label"].to_numpy(), g["prob"].to_numpy()), 4)


def roc_outputs(folder: Path, oof: pd.DataFrame) -> dict:
    """ROC PNG, a TPR/FPR table by threshold, and AUC per fold and overall; for K classes
    (a class column: one row per image and class) each class's AUC and curve too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = oof["label"].to_numpy(), oof["prob"].to_numpy()
    aucs = {f"fold{k}": _auc_of(g) for k, g in oof.groupby("fold")}
    by_class = "class" in oof.columns
    class_auc = {str(c): _auc_of(g) for c, g in oof.groupby("class", sort=False)} if by_class else {}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for key, g in oof.groupby("class" if by_class else "fold", sort=False):
        if 0 < g["label"].sum() < len(g):
            fpr, tpr, _ = roc_curve(g["label"], g["prob"])
            name = f"{key} AUC {class_auc[str(key)]:.3f}" if by_class else f"fold {key} AUC {aucs[f'fold{key}']:.3f}"
            ax.plot(fpr, tpr, lw=1, alpha=0.6, label=name)
    overall = safe_auc(y, p)
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2, color="k", label=f"all AUC {overall:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fileio.atomic_write(folder / "roc.png", lambda tmp: fig.savefig(tmp, dpi=90, format="png"), fsync=False)
    plt.close(fig)
    thresholds = np.round(np.arange(0.05, 1.0, 0.05), 2)
    pos, neg = max(y.sum(), 1), max((1 - y).sum(), 1)
    table = pd.DataFrame(
        {
            "threshold": thresholds,
            "tpr": [((p >= t) & (y == 1)).sum() / pos for t in thresholds],
            "fpr": [((p >= t) & (y == 0)).sum() / neg for t in thresholds],
        }
    )
    fileio.write_csv(folder / "roc_table.csv", table)
    return {"oof_auc": round(overall, 4), "fold_auc": aucs} | ({"class_auc": class_auc} if by_class else {})
