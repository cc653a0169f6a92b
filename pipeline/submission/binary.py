"""Submission files: reading one, validating it (ids, order, RLE) and scoring it against a
folder of truth masks. Used by the submit stage, `python -m pipeline score` and notebooks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import UserError
from pipeline.data.imageio import list_images, load_mask
from pipeline.data.rle import rle_decode, rle_encode, validate_rle
from pipeline.data.sources import format_problems
from pipeline.evaluation.metrics import pixel_counts, scores_from_counts
from pipeline.postprocessing.masks import apply


def read_submission(csv: str | Path) -> pd.DataFrame:
    """id + rle columns of a submission: the first two columns, whatever their names (the id
    column follows data.id_column, e.g. ImageId)."""
    path = Path(csv)
    if not path.is_file():
        raise UserError(f"{path}: submission file not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    if df.shape[1] < 2:
        raise UserError(f"{path}: expected two columns <id>,<rle>, got {', '.join(df.columns)}")
    return df.iloc[:, :2].set_axis(["id", "rle"], axis=1)


def check_submission(df: pd.DataFrame, expected_ids: list[str], shapes: dict[str, tuple[int, int]], name: str) -> list[str]:
    """Problems of a submission: duplicate, missing, extra or reordered ids, malformed RLE."""
    problems = [f"{name}: duplicate id {i}" for i in df.loc[df["id"].duplicated(), "id"].unique()]
    got = set(df["id"])
    problems += [f"{name}: missing id {i}" for i in expected_ids if i not in got]
    problems += [f"{name}: unexpected id {i}" for i in df["id"] if i not in shapes]
    if not problems and df["id"].tolist() != list(expected_ids):
        problems.append(f"{name}: ids are not in the expected order (sample_submission or test folder)")
    for i, rle in zip(df["id"], df["rle"], strict=True):
        if i in shapes:
            err = validate_rle(rle, shapes[i])
            if err:
                problems.append(f"{name}: id {i}: malformed RLE: {err}")
    return problems


def score_submission(csv: str | Path, masks_dir: str | Path, metric: str = "tgs", invert: bool = False) -> tuple[float, int]:
    """Validate a submission against a folder of truth masks and return (mean metric, n);
    `invert`: the masks draw the foreground as 0 (data.mask_invert)."""
    scores = submission_scores(csv, masks_dir, metric, invert)
    return float(scores.mean()), len(scores)


def submission_scores(csv: str | Path, masks_dir: str | Path, metric: str = "tgs", invert: bool = False) -> pd.Series:
    """Each image's metric (by id) of a submission validated against a folder of truth masks."""
    sub = read_submission(csv)
    folder = Path(masks_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: masks folder not found")
    files, _ = list_images(folder)
    truths = {}
    for i, p in sorted(files.items()):
        loaded = load_mask(p)
        if loaded.array is None:
            raise UserError(f"{p}: {loaded.problem}")
        truths[i] = loaded.array
    shapes = {i: t.shape[:2] for i, t in truths.items()}
    order = [i for i in sub["id"] if i in shapes] if set(sub["id"]) == set(shapes) else sorted(shapes)
    problems = check_submission(sub, order, shapes, Path(csv).name)
    if problems:
        raise UserError(format_problems(problems))
    preds = [rle_decode(rle, shapes[i]).astype(bool) for i, rle in zip(sub["id"], sub["rle"], strict=True)]
    scores = scores_from_counts(*pixel_counts([(truths[i] > 0) != invert for i in sub["id"]], preds), metric)
    return pd.Series(scores, index=pd.Index(sub["id"], name="id"), name=metric)


def header_problem(sample: Path | None, header: list[str]) -> str | None:
    """Why a submission with columns `header` would not match the sample submission's header
    (None when it matches or there is no sample): Kaggle rejects a file whose columns differ."""
    if sample is None or not sample.is_file():
        return None
    # utf-8-sig: a sample saved by Excel starts with a byte-order mark that is not part of the name.
    with open(sample, newline="", encoding="utf-8-sig", errors="replace") as f:
        got = next(csv.reader(f), [])
    if got != header:
        return (
            f"{sample}: header {','.join(got)} differs from the submission's {','.join(header)}"
            " (data.id_column, submit.rle_column): set them to the sample's column names"
        )
    return None


def make_submission(
    ids: list[str],
    probs: list[np.ndarray],
    cls: np.ndarray,
    params: pd.DataFrame,
    header: list[str],
    sample: Path | None,
    shapes: dict[str, tuple[int, int]],
) -> pd.DataFrame:
    """Post-process each test map with its row of `params` (threshold, min_area, gate, by id),
    RLE-encode, and validate the whole file (header against the sample submission, ids and
    order, each RLE against its image's `shapes`) before anything is written: a UserError
    names every problem."""
    problem = header_problem(sample, header)
    if problem:
        raise UserError(problem)
    rows = []
    for i, prob, c in zip(ids, probs, cls, strict=True):
        p = params.loc[i]
        rows.append((i, rle_encode(apply(prob, c, p["threshold"], int(p["min_area"]), p["gate"]))))
    sub = pd.DataFrame(rows, columns=header)
    problems = check_submission(sub.set_axis(["id", "rle"], axis=1), ids, shapes, "submission")
    if problems:
        raise UserError(format_problems(problems))
    return sub
