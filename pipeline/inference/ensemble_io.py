"""Read access to the ensemble stage's outputs (blended OOF/test maps, distance maps,
classifier probabilities), shared by the scorer, the submission and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import zoo
from pipeline.core.fileio import read_csv
from pipeline.core.store import ArrayStore, map_of
from pipeline.data.classrows import read_rows, truth_planes
from pipeline.data.tables import train_classes


def read_maps(folder: Path, name: str, ids: list[str]) -> list[np.ndarray] | None:
    """Dequantised maps of store `name` for `ids`, or None when the store is absent."""
    if not (folder / f"{name}.index.csv").exists():
        return None
    store = ArrayStore(folder, name)
    return [map_of(store.get(i)) for i in ids]


def model_folders(names: list[str], upstream: Mapping[str, Path]) -> dict[str, Path]:
    """The folder holding fold models and an 'oof' store of each model that `ensemble.models`
    names, from the stage folders in `upstream` (a zoo model's under its own entry)."""
    out = {}
    for name in names:
        stage, model = zoo.parse(name)
        folder = upstream[stage] if model == zoo.BASE else upstream[name]
        # The config check made sure pseudo.rounds >= 1 when pseudo rounds are named.
        out[name] = folder / "final" if stage == zoo.PSEUDO else folder
    return out


def common_ids(dirs: dict[str, Path], order: list[str]) -> list[str]:
    """The ids (in `order`) that every model's OOF store holds: the images the blend is fitted on."""
    sets = [set(ArrayStore(d, "oof").ids) for d in dirs.values()]
    return [i for i in order if all(i in s for s in sets)]


class EnsembleOutputs:
    """Blended predictions of one ensemble artifact, with the ingest data they refer to."""

    def __init__(self, ensemble_dir: Path, ingest_dir: Path, ingest_test_dir: Path) -> None:
        self.dir, self.ingest_dir = Path(ensemble_dir), Path(ingest_dir)
        self.ingest_test_dir = Path(ingest_test_dir)
        oof_cls = read_rows(self.dir / "oof_cls.csv")
        test_cls = read_rows(self.dir / "test_cls.csv")
        # Rows: one per image, or per (image, class) for K classes (a class column).
        self.oof_ids: list[str] = list(dict.fromkeys(oof_cls["id"]))
        self.test_ids: list[str] = list(dict.fromkeys(test_cls["id"]))
        self.oof_cls = oof_cls["prob"].to_numpy(dtype=float)  # per row
        self.test_cls = test_cls["prob"].to_numpy(dtype=float)

    @cached_property
    def images(self) -> ArrayStore:
        return ArrayStore(self.ingest_dir, "images")

    @cached_property
    def masks(self) -> ArrayStore:
        return ArrayStore(self.ingest_dir, "masks")

    @cached_property
    def test_images(self) -> ArrayStore:
        return ArrayStore(self.ingest_test_dir, "test_images")

    @cached_property
    def train_meta(self) -> pd.DataFrame:
        return read_csv(self.ingest_dir / "train.csv")

    @cached_property
    def test_meta(self) -> pd.DataFrame:
        return read_csv(self.ingest_test_dir / "test.csv")

    @cached_property
    def classes(self) -> tuple[str, ...]:
        return train_classes(self.ingest_dir)

    @property
    def k(self) -> int:
        return max(len(self.classes), 1)

    def truths(self) -> list[np.ndarray]:
        """Boolean truths per row: an image, or an (image, class) pair for K classes."""
        return [t for i in self.oof_ids for t in truth_planes(self.masks.get(i), self.k)]

    def oof_probs(self) -> list[np.ndarray]:
        """The blended OOF maps, read anew on each call: a caller holds them only as long as it
        needs them (K classes of large images: gigabytes)."""
        return read_maps(self.dir, "oof", self.oof_ids)

    def oof_dists(self) -> list[np.ndarray] | None:
        return read_maps(self.dir, "oof_dist", self.oof_ids)

    def test_probs(self) -> list[np.ndarray]:
        return read_maps(self.dir, "test", self.test_ids)

    def test_dists(self) -> list[np.ndarray] | None:
        return read_maps(self.dir, "test_dist", self.test_ids)
