"""Readers of what the ingest and folds stages wrote: the train table, the folds table, the
class names, and the fold model files of a model folder. Shared by training, inference and the
bundle, so they live below all three."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import fileio
from pipeline.core.store import ArrayStore


def load_folds(folder: Path) -> pd.DataFrame:
    """folds.csv of a folds artifact: id, fold, coverage, stratum (and group)."""
    return fileio.read_csv(folder / "folds.csv")


def read_train_table(ingest_dir: Path) -> pd.DataFrame:
    """train.csv of an ingest artifact: id, size, coverage and the metadata columns."""
    return fileio.read_csv(ingest_dir / "train.csv")


def open_train(ingest_dir: Path) -> tuple[ArrayStore, ArrayStore, pd.DataFrame]:
    """Images, masks and the train table of an ingest artifact."""
    return ArrayStore(ingest_dir, "images"), ArrayStore(ingest_dir, "masks"), read_train_table(ingest_dir)


def train_classes(ingest_dir: Path) -> tuple[str, ...]:
    """The class names an ingest artifact was written with (empty for one binary class)."""
    return tuple((fileio.read_json(ingest_dir / "stats.json") or {}).get("train", {}).get("classes", {}))


def class_presence(table: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(n, K) bool: whether each row's image holds each class (its coverage_<class> column)."""
    return table[[f"coverage_{c}" for c in classes]].to_numpy(dtype=float) > 0


def folds_to_run(cfg_folds: list[int], folds: pd.DataFrame) -> list[int]:
    """The configured fold subset, or every fold of the table when it is empty."""
    return list(cfg_folds) or sorted(folds["fold"].unique().tolist())


def fold_of(model_path: Path) -> int:
    """k of a fold model file `.../fold<k>/model.pt`."""
    return int(model_path.parent.name.removeprefix("fold"))


def fold_model_paths(folder: Path, folds: list[int] | None = None) -> list[Path]:
    """`fold<k>/model.pt` of a model folder, in fold order: all, or those of `folds`."""
    paths = sorted(folder.glob("fold*/model.pt"))
    return paths if folds is None else [p for p in paths if fold_of(p) in set(folds)]
