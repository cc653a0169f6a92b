"""Option segment.hard: easy / hard labelling for a second round (pipeline/training/hard.py).
The first fit writes into the fold's `first/`; then each training image's in-sample difficulty
under that model draws the hard ones more often in a short fine-tuning round, which writes the
fold's model.pt."""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd
import torch

from pipeline.core import fileio
from pipeline.training import hard
from pipeline.training.loop import Fitter, fit_done
from pipeline.training.options.base import Fold, Option
from pipeline.training.seg_task import SEG_HEAD_WEIGHT, row_scores, seg_task

logger = logging.getLogger(__name__)


class HardRound(Option):
    def start(self, fold: Fold, model: torch.nn.Module) -> None:
        fold.fit_dir = fold.folder / "first"  # the hard round writes the fold's model.pt

    def finished(self, fold: Fold, model: torch.nn.Module) -> bool:
        # A finished or reused fold (reuse copies no first/): no first round again.
        if not fit_done(fold.folder):
            return False
        model.load_state_dict(torch.load(fold.folder / "model.pt", map_location=fold.device, weights_only=True))
        return True

    def after(self, fold: Fold, model: torch.nn.Module) -> None:
        scfg, folder = fold.cfg.segment, fold.folder
        hardness = _difficulty(fold, model)
        logger.info(f"{folder.name}: hard round, mean difficulty {hardness.mean():.3f}, {int((hardness > 0.5).sum())} images above 0.5")
        seg, fit = hard.round_cfgs(scfg)
        loss = seg_task(seg, None, SEG_HEAD_WEIGHT if fold.cfg.classify.seg_head else 0.0).loss
        task = dataclasses.replace(fold.task, loss=loss, prepare=None)
        Fitter(model, task, fit, folder, fold.device, fold.seed + 500).fit(
            fold.dataset, hard.hard_weights(fold.weights, hardness, scfg.hard.strength)
        )
        model.load_state_dict(torch.load(folder / "model.pt", map_location=fold.device, weights_only=True))


def _difficulty(fold: Fold, model: torch.nn.Module):
    """Each training image's difficulty under the first round's model, saved beside it; a
    resumed hard round reads the ones its first run drew with."""
    data, train_idx, scfg = fold.data, fold.train_idx, fold.cfg.segment
    saved, ids = fold.folder / "first" / hard.DIFFICULTY_CSV, [data.images.ids[int(i)] for i in train_idx]
    if saved.exists():
        return fileio.read_csv(saved, dtype={"id": str}).set_index("id").loc[ids, "difficulty"].to_numpy()
    # Grown as in training (from the training part alone): no validation tile's pixels shape the weights.
    seen = data.trained_on(scfg, train_idx, data.masks)[0]
    scores = row_scores(model, seen, train_idx, fold.spec, data.truths(train_idx), scfg.train.eval_threshold)
    hardness = hard.difficulty(scores, len(train_idx))
    fileio.write_csv(saved, pd.DataFrame({"id": ids, "difficulty": hardness}))
    return hardness
