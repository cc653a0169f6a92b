"""Policy choice of the scorer stage, on hand-made score tables."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.postprocessing.score_predictor import choose

# 3 candidates; fit-fold scores favour candidate 2, predictions favour 1 on average, but
# image 0's best predicted candidate is 0.
FIT = np.array([[0.1, 0.2, 0.9], [0.2, 0.1, 0.8]])
PRED = np.array([[0.9, 0.5, 0.1], [0.1, 0.8, 0.2], [0.0, 0.9, 0.3]])


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("none", [1, 1, 1]), ("grid", [2, 2, 2]), ("global", [1, 1, 1]), ("per_image", [0, 1, 1])],
)
def test_choose_policies(policy, expected):
    np.testing.assert_array_equal(choose(policy, 3, PRED, FIT, raw=1), expected)


def test_grid_and_none_need_no_predictions():
    np.testing.assert_array_equal(choose("grid", 2, None, FIT), [2, 2])
    np.testing.assert_array_equal(choose("none", 2, None, FIT, raw=0), [0, 0])


def test_none_without_raw_candidate_is_a_clear_error():
    with pytest.raises(UserError, match="threshold 0.5, min area 0 and gate 0"):
        choose("none", 3, PRED, FIT, raw=None)
