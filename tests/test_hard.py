"""segment.hard: easy / hard labelling and a second round that draws hard images more often."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.engine import cache
from pipeline.stages import GRAPH
from pipeline.training import hard, segmentation
from pipeline.training.options import hard as hard_option
from pipeline.training.trainset import TrainSet


def test_hard_weights_scale_the_training_part_alone():
    w = hard.hard_weights(np.array([1.0, 2.0, 1.0, 3.0]), np.array([0.0, 0.5, 1.0]), strength=2.0)
    assert w.tolist() == [1.0, 4.0, 3.0, 3.0]  # the fourth, an extra image, keeps its weight


def test_the_round_keeps_the_last_loss_phase_without_crops_or_swa(smoke_cfg):
    cfg = smoke_cfg("segment.hard.enabled=true", "segment.hard.epochs=3").segment
    seg, fit = hard.round_cfgs(cfg)
    assert [p.terms for p in seg.train.loss] == [cfg.train.loss[-1].terms] and seg.train.loss[0].until_epoch == 0
    assert seg.train.progressive.crop == 0 and fit.epochs == 3 and fit.swa_epochs == 0 and fit.lr == cfg.train.swa_lr


def test_the_switch_is_hashed_only_when_on(smoke_cfg):
    off, on = smoke_cfg(), smoke_cfg("segment.hard.enabled=true")
    assert "hard" not in GRAPH.key_material(off, "segment")["config"]["segment"]
    assert GRAPH.key_material(on, "segment")["config"]["segment"]["hard"]["enabled"] is True
    assert "hard" not in GRAPH.key_material(off, "pseudo")["config"]["segment"]


@pytest.mark.slow
def test_segment_stage_runs_a_hard_round_on_the_training_part(smoke_cfg, monkeypatch):
    cfg = smoke_cfg("segment.hard.enabled=true", "segment.hard.epochs=1", "segment.train.folds=[0]")
    fits, scored, rows = [], [], []
    fit, difficulty, row_scores = segmentation.Fitter.fit, hard.difficulty, hard_option.row_scores

    def spy_fit(self, ds, weights=None, on_epoch_end=None):
        fits.append((self.out_dir.name, weights))
        return fit(self, ds, weights, on_epoch_end)

    def spy_rows(model, images, idx, spec, truths, threshold):
        rows.append(idx)
        return row_scores(model, images, idx, spec, truths, threshold)

    def spy_difficulty(scores, n_images):
        d = difficulty(scores, n_images)
        scored.append((rows[-1], d))  # the images scored just before: the ones the difficulty is of
        return d

    monkeypatch.setattr(segmentation.Fitter, "fit", spy_fit)
    monkeypatch.setattr(hard, "difficulty", spy_difficulty)
    monkeypatch.setattr(hard_option, "row_scores", spy_rows)
    folder, _ = cache.run_stage(GRAPH, cfg, "segment")
    assert [name for name, _ in fits] == ["first", "fold0"]
    assert (folder / "fold0" / "first" / "model.pt").exists() and (folder / "fold0" / "model.pt").exists()
    idx, d = scored[0]
    data = TrainSet.open(cache.stage_dir(GRAPH, cfg, "ingest"), cache.stage_dir(GRAPH, cfg, "folds"))
    assert np.array_equal(idx, data.split(0, 0, cfg.experiment.seed)[0])  # the training part alone, never validation
    first, second = fits[0][1], fits[1][1]
    assert np.allclose(second, first * (1 + cfg.segment.hard.strength * d)) and d.max() > 0
    # The finished fold trained again (as a reused one would be): neither retrained nor rescored.
    segmentation.train_fold(cfg, folder / "fold0", data, 0)
    assert len(fits) == 2 and len(scored) == 1
    # The difficulties are saved with the first round: a hard round resumed after it draws with them.
    saved = pd.read_csv(folder / "fold0" / "first" / hard.DIFFICULTY_CSV, dtype={"id": str})
    assert saved["id"].tolist() == [data.images.ids[int(i)] for i in idx] and np.allclose(saved["difficulty"], d)
    (folder / "fold0" / "model.pt").unlink()
    segmentation.train_fold(cfg, folder / "fold0", data, 0)
    assert len(scored) == 1 and [name for name, _ in fits[2:]] == ["first", "fold0"]
    assert np.allclose(fits[3][1], first * (1 + cfg.segment.hard.strength * d))
