"""Metadata CSVs joined to the images by id: reading and checking them at ingest, and the
group column check the folds stage needs.

Only an empty cell is a missing value (fileio.read_csv): `NA` or `nan` in a value column is
text, like any other word, so a column of numbers holding one is no longer numeric, and
`select_dtypes("number")` (features.feature_table, explore.numeric_metadata) silently
drops it. Ingest says so in a warning rather than guessing which text means "missing"."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.core import paths as paths_mod
from pipeline.core.errors import UserError
from pipeline.core.fileio import read_csv
from pipeline.data.imageio import Report, read_id_csv

log = logging.getLogger(__name__)

# Metadata columns with these names get a prefix rather than shadowing ingest's own.
OWN_COLUMNS = {"height", "width", "coverage", "empty"}


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def warn_mixed_columns(df: pd.DataFrame, name: str) -> None:
    """One warning line per column that is mostly numbers but holds text or empty cells."""
    for column in df.columns.drop("id"):
        values = df[column]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().all() or numbers.notna().sum() * 2 < values.notna().sum():
            continue  # a text column (mostly words), not a numeric one with exceptions
        text = values.notna() & numbers.isna()
        if text.any():
            first = text.to_numpy().argmax()
            log.warning(
                f"{name}: column {column!r} is numeric except {_entries(int(text.sum()))} "
                f"(first: id {df['id'].iloc[first]} = {values.iloc[first]!r}); it is read as text, so it is not a numeric feature"
            )
        elif values.isna().any():
            first = values.isna().to_numpy().argmax()
            log.warning(
                f"{name}: column {column!r} is numeric except {_entries(int(values.isna().sum()))} left empty "
                f"(first: id {df['id'].iloc[first]}); they are missing values (NaN) of that feature"
            )


def read_metadata(report: Report, files: Sequence[Path], id_column: str, ids: dict[str, Path]) -> pd.DataFrame | None:
    """The metadata CSVs concatenated (id column renamed to `id`), one row per id; reports
    unreadable files, duplicate ids and images without a row."""
    frames = []
    for path in files:
        df = read_id_csv(report, path, [id_column], text=False)
        if df is not None:
            df = df.rename(columns={id_column: "id"})
            warn_mixed_columns(df, report.name(path))
            frames.append(df.assign(_source=report.name(path)))
    if not frames or len(frames) < len(files):
        return None  # unreadable file already reported; skip a line per id
    meta = pd.concat(frames, ignore_index=True)
    dups = meta[meta["id"].duplicated(keep=False)]
    for item_id, where in dups.groupby("id")["_source"]:
        report.add(", ".join(sorted(set(where))), f"duplicate id {item_id} ({len(where)} rows)")
    known = set(meta["id"])
    names = ", ".join(report.name(p) for p in files)
    for item_id, path in ids.items():
        if item_id not in known:
            report.add(path, f"id {item_id} missing from metadata ({names})")
    return meta.drop_duplicates("id").drop(columns="_source")


def join_metadata(table: pd.DataFrame, meta: pd.DataFrame | None) -> pd.DataFrame:
    if meta is None:
        return table
    renames = {c: f"meta_{c}" for c in meta.columns if c in OWN_COLUMNS}
    return table.merge(meta.rename(columns=renames), on="id", how="left")


def check_group_column(train: pd.DataFrame, column: str | None, metadata: Sequence[str | Path], id_column: str = "id") -> None:
    """Refuse (UserError, one line) a group column with missing values: StratifiedGroupKFold
    cannot place an image without a group. Names the metadata file the column came from."""
    if not column or column not in train.columns:
        return  # no grouping, or the folds stage reports the unknown column itself
    missing = train[column].isna().to_numpy()
    if not missing.any():
        return
    first = str(train["id"].to_numpy()[missing.argmax()])
    source = _source_file(column, first, metadata, id_column)
    raise UserError(
        f"{source}: column {column!r} (folds.group_column) is empty for {int(missing.sum())} ids "
        f"(first: id {first}); give every image a group or choose another column"
    )


def _source_file(column: str, item_id: str, metadata: Sequence[str | Path], id_column: str) -> str:
    """The metadata file whose `column` holds the row of `item_id` (else the first with the column)."""
    having = []
    for path in (paths_mod.resolve(m) for m in metadata):
        try:
            df = read_csv(path, usecols=[id_column, column], dtype={id_column: str})
        except (OSError, ValueError):  # unreadable, or no such column
            continue
        if (df[id_column] == item_id).any():
            return str(path)
        having.append(str(path))
    return having[0] if having else "train.csv of the ingest artifact"
