"""Fold models reused across artifacts of a stage when only inference settings differ.

A stage key hashes its whole config section, so adding a fold to `segment.train.folds` or
changing the TTA gives a new segment folder. Retraining the folds that already exist would cost
an hour on a CPU for nothing: what a fold's training reads is the key material less the
inference-only fields. Each trained fold records that as `train_key`; a new folder copies a
finished fold whose `train_key` matches instead of training it, then predicts as configured.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from pipeline.core import distributed, fileio
from pipeline.engine.cache import Context
from pipeline.engine.graph import digest
from pipeline.training.loop import fit_done

TRAIN_KEY = "train_key"
# segment.train fields that only shape prediction (validation during training runs without TTA)
# or which folds run (each fold's seed and split depend on its index alone).
PREDICT_ONLY = ("tta", "folds")
# The fold's prediction outputs are redone under the new settings, so never copied.
_PREDICTION_PREFIX = "oof"


def fold_train_key(material: dict, section: str, k: int) -> str:
    """Hash of what training fold k reads: the stage's key material less PREDICT_ONLY fields."""
    trimmed = copy.deepcopy(material)
    train = trimmed["config"][section]["train"]
    for name in PREDICT_ONLY:
        train.pop(name, None)
    return digest({"fold": k, "material": trimmed})


def _finished_match(candidate: Path, key: str) -> bool:
    # The marker is written after the fold's training returned, so a match implies finished files.
    try:
        return fit_done(candidate) and (candidate / TRAIN_KEY).read_text().strip() == key
    except FileNotFoundError:  # no marker, or the sibling went away meanwhile
        return False


def _copy_fold(candidate: Path, folder: Path) -> bool:
    """Copy the fold's training files into `folder` whole, or not at all (False: the candidate
    vanished mid-copy, e.g. renamed aside by a --force rerun of its own stage)."""
    # The temp folder is this process's own: another one may be copying into a sibling temp.
    tmp = fileio.temp_path(folder, ".reuse")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had our pid
    tmp.mkdir(parents=True)
    try:
        for item in candidate.iterdir():
            if item.is_file() and not item.name.startswith(_PREDICTION_PREFIX):
                shutil.copy2(item, tmp / item.name)
        tmp.rename(folder)  # a killed copy leaves only the hidden tmp folder, never a half fold
    except FileNotFoundError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def reuse_fold(ctx: Context, folder: Path, key: str) -> Path | None:
    """Copy a finished fold with training key `key` from a sibling artifact into `folder`.

    Returns the source fold, or None (nothing matched, a --force rerun, or `folder` already
    holds this fold's own work, e.g. a checkpoint to resume from)."""
    if ctx.force or folder.exists() or not distributed.is_main():  # rank 0 copies for all
        return None
    for candidate in sorted(ctx.dir.parent.glob(f"{ctx.stage}-*/{folder.name}")):
        # `folder` does not exist, so the current artifact is never among the candidates.
        if _finished_match(candidate, key) and _copy_fold(candidate, folder):
            return candidate
    return None


def mark_trained(folder: Path, key: str) -> None:
    """Record the training key of a finished fold, so later artifacts may reuse it."""
    if not distributed.is_main():
        return
    fileio.write_text(folder / TRAIN_KEY, key)
