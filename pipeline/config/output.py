"""The scorer, ensemble and submit sections: the post-processing grid and its chooser, the blend,
the submission metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.config import fields
from pipeline.config.fields import Problems, valid


@dataclass
class ScorerCfg:
    thresholds: list[float] = valid(min=0, max=1, nonempty=True)
    min_areas: list[int] = valid(min=0, nonempty=True)
    gates: list[float] = valid(min=0, max=1, nonempty=True)
    lgbm: dict[str, Any]
    policy: str = valid(*fields.SCORER_POLICIES)  # auto: best under nested CV; none: no post-processing
    knn: int = valid(min=0)  # neighbours whose predictions are features (pipeline/neighbours/knn.py); 0 = off
    difficulty: bool  # policy `difficulty`: a grid candidate per easy / medium / hard group
    edges: bool  # neighbour-edge features from the mosaic stage's neighbours (pipeline/neighbours/edges.py)

    def check(self) -> Problems:
        # policy none scores the plain masks: the candidate (0.5, 0, 0) must be in the grid.
        raw = any(math.isclose(t, 0.5) for t in self.thresholds) and 0 in self.min_areas and 0 in self.gates
        if self.policy == "none" and not raw:
            return [("policy", "got 'none', which needs threshold 0.5, min area 0 and gate 0 among the candidates")]
        if self.policy == "difficulty" and not self.difficulty:
            return [("policy", "got 'difficulty', which needs scorer.difficulty: true")]
        return []


@dataclass
class EnsembleCfg:
    models: list[str] = valid(nonempty=True, distinct=True)  # segment, pseudo, NAME, pseudo:NAME (pipeline/config/zoo.py)
    fit_weights: bool
    adabn: bool  # re-estimate BatchNorm statistics on the test images (shifted test domain)
    # K exclusive classes: classes = the blended class maps as they are; foreground = each
    # defect's foreground (1 - background) given to the one class that wins inside it
    # (pipeline/postprocessing/readout.py).
    readout: str = valid("classes", "foreground")


@dataclass
class SubmitCfg:
    metric: str = valid(*fields.METRICS)
    rle_column: str
