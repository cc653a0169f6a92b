"""Sampling weights from the embed stage: cluster balance (rare clusters of similar images
drawn more often) and test-likeness (train images that look like the test set drawn more
often: importance weights for a covariate shift, from adversarial validation).

Both multiply the coverage-bin oversampling weights of pipeline.data.datasets.sample_weights.
The weights of fold k are computed from fold k's training part alone (cluster sizes counted
there); they read no mask, and the embed stage that feeds them must run without its
classification constraint (pipeline.config.validate), so no validation mask shapes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import fileio
from pipeline.core.errors import UserError

# Weights are clipped to [1/CLIP, CLIP] times their median: one image drawn 100x as often as
# another would make an epoch a few images seen over and over.
CLIP = 10.0
# Test-likeness is a cross-validated probability; odds of 0 or 1 would give weights of 0 or inf.
EPS = 1e-3


@dataclass(frozen=True)
class ImageTraits:
    """Per train image (in store order): its embedding cluster and its test-likeness."""

    cluster: np.ndarray
    test_likeness: np.ndarray

    @classmethod
    def read(cls, embed_dir: Path, ids: list[str]) -> ImageTraits:
        # Train rows alone: a test image may share an id with a train image.
        clusters, adversarial = (
            (t := fileio.read_csv(embed_dir / name, dtype={"id": str}))[t["split"] == "train"].set_index("id")
            for name in ("clusters.csv", "adversarial.csv")
        )
        missing = sorted(set(ids) - set(clusters.index) | set(ids) - set(adversarial.index))
        if missing:
            raise UserError(f"{embed_dir}: no embedding for train image {missing[0]!r} ({len(missing)} missing)")
        return cls(clusters.loc[ids, "cluster"].to_numpy(), adversarial.loc[ids, "test_likeness"].to_numpy(float))


def weights(traits: ImageTraits, idx: np.ndarray, clusters: float, test_likeness: float) -> np.ndarray:
    """Sampling weights (mean 1) of the images at store positions `idx`: each cluster's weight
    is its size there to the power -`clusters` (1 = every cluster drawn equally often), each
    image's the odds of its test-likeness to the power `test_likeness` (1 = the density ratio
    p(test) / p(train) up to a constant)."""
    w = np.ones(len(idx))
    if clusters:
        cluster = traits.cluster[idx]
        _, inverse, counts = np.unique(cluster, return_inverse=True, return_counts=True)
        w *= (counts[inverse] / counts.mean()) ** -clusters
    if test_likeness:
        if np.isnan(traits.test_likeness[idx]).any():  # the embed stage had too few images of a split to tell
            raise UserError("segment.balance.test_likeness: the embed stage's adversarial.csv has no test-likeness (too few images)")
        p = np.clip(traits.test_likeness[idx], EPS, 1 - EPS)
        w *= (p / (1 - p)) ** test_likeness
    med = np.median(w)
    w = np.clip(w, med / CLIP, med * CLIP)
    return w / w.mean()
