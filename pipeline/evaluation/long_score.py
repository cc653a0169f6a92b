"""Scoring a long-format (K-class) submission against a long-format solution: the steel and
clouds metric, the mean Dice over (image, class) pairs with an empty-empty pair scored 1, and
each class's mean. Either file may use either layout (`longrle`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.data.imagehead import header_size
from pipeline.data.imageio import Report, decode_file, list_images
from pipeline.data.longrle import read_masks
from pipeline.data.multiclass import Classes
from pipeline.data.sources import format_problems
from pipeline.evaluation.metrics import pixel_counts, scores_from_counts


@dataclass(frozen=True)
class LongScore:
    mean: float  # over every (image, class) pair
    per_class: dict[str, float]
    images: int


def image_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """(height, width) of each image of a folder, from its header where it can be read."""
    if not folder.is_dir():
        raise UserError(f"{folder}: images folder not found")
    files, _ = list_images(folder)
    shapes = {}
    for item_id, path in sorted(files.items()):
        size = header_size(path.read_bytes())
        if size is None:
            loaded = decode_file(path)
            if loaded.array is None:
                raise UserError(f"{path}: {loaded.problem}")
            size = loaded.array.shape[1::-1]
        shapes[item_id] = (int(size[1]), int(size[0]))
    if not shapes:
        raise UserError(f"{folder}: no images")
    return shapes


def score_long(submission: Path, solution: Path, images: Path, classes: Classes, metric: str = "dice") -> LongScore:
    """Score every image of `images` (the solution's) in every class; a problem in either
    CSV (unknown class, image or column, malformed RLE, repeated rows) is a UserError."""
    shapes = image_shapes(Path(images))
    report = Report([Path(submission), Path(solution)])
    truth = read_masks(report, Path(solution), classes, shapes)
    pred = read_masks(report, Path(submission), Classes(classes.names), shapes)  # a prediction may overlap
    if report.problems:
        raise UserError(format_problems(report.problems))
    ids = sorted(shapes)
    k = len(classes)
    t = [truth[i][c] for i in ids for c in range(k)]
    p = [pred[i][c] for i in ids for c in range(k)]
    scores = scores_from_counts(*pixel_counts(t, p), metric).reshape(len(ids), k)
    per_class = {name: float(scores[:, c].mean()) for c, name in enumerate(classes.names)}
    return LongScore(float(np.mean(scores)), per_class, len(ids))
