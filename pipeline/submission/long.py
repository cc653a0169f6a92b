"""K-class submissions in the long format of the competition's sample submission (one row per
image and class, `ImageId, ClassId` or `Image_Label`; pipeline.data.longrle), built from the test
maps with each (image, class) row's post-processing and validated before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import UserError
from pipeline.data.classrows import planes
from pipeline.data.imageio import Report
from pipeline.data.longrle import IMAGE_LABEL, RLE, Layout, image_ids, sample_keys, to_frame
from pipeline.data.multiclass import Classes
from pipeline.data.rle import rle_encode, validate_rle
from pipeline.data.sources import format_problems
from pipeline.postprocessing.masks import apply


def sample_layout(sample: Path | None, classes: Classes, ids: list[str]) -> tuple[Layout, dict[str, str]]:
    """The sample submission's layout and the key it gives each image id (its file name, say);
    without a sample, Image_Label rows keyed by the ids."""
    if sample is None or not sample.is_file():
        return IMAGE_LABEL, {i: i for i in ids}
    report = Report([sample])
    found = sample_keys(report, sample, classes)
    if found is None or report.problems:
        raise UserError(format_problems(report.problems))
    layout, keys = found
    key_of: dict[str, str] = {}
    extra = []  # keys of no test image
    for key, i in zip(keys, image_ids(keys, set(ids)), strict=True):
        if i is None:
            extra.append(key)
        elif i in key_of:
            raise UserError(f"{sample}: keys {key_of[i]} and {key} both name test image {i}")
        else:
            key_of[i] = key
    missing = [i for i in ids if i not in key_of]
    if missing or extra:
        what = f"no rows for test image {missing[0]}" if missing else f"image {extra[0]} is not in the test folder"
        raise UserError(f"{sample}: {what} ({len(missing)} test images without rows, {len(extra)} rows without an image)")
    return layout, key_of


def make_long_submission(
    ids: list[str], probs: list[np.ndarray], cls: np.ndarray, params: pd.DataFrame, classes: Classes, sample: Path | None, shapes: dict
) -> pd.DataFrame:
    """Post-process each (image, class) map with its row of `params` (threshold, min_area, gate,
    in (image, class) order) and its row's classifier probability `cls` (NaN: never gated),
    RLE-encode, lay out as the sample submission does (its keys and order), and check every row
    before returning: a UserError names every problem."""
    layout, key_of = sample_layout(sample, classes, ids)
    rles: dict[tuple[str, int], str] = {}
    rows = zip(params.itertuples(index=False), cls, strict=True)
    for i, prob in zip(ids, probs, strict=True):
        for c, plane in enumerate(planes(prob)):
            p, gate_prob = next(rows)
            mask = apply(plane, gate_prob, p.threshold, int(p.min_area), p.gate)
            if mask.any():
                rles[key_of[i], c] = rle_encode(mask)
    order = list(dict.fromkeys(key_of[i] for i in ids))
    frame = to_frame(layout, rles, order, classes)
    problems = _problems(frame, order, {key_of[i]: shapes[i] for i in ids}, len(classes))
    if problems:
        raise UserError(format_problems(problems))
    return frame


def _problems(frame: pd.DataFrame, order: list[str], shapes: dict[str, tuple[int, int]], k: int) -> list[str]:
    """Rows missing or repeated (each image key of `order` once per class, in order) and
    malformed RLE."""
    expected = [key for key in order for _ in range(k)]
    if len(frame) != len(expected):
        return [f"submission: {len(frame)} rows, expected {len(expected)} ({len(order)} images x {k} classes)"]
    out = []
    for line, (key, rle) in enumerate(zip(expected, frame[RLE], strict=True), start=2):
        err = "unknown image" if key not in shapes else validate_rle(rle, shapes[key])
        if err:
            out.append(f"submission line {line}: {key}: {err}")
    return out
