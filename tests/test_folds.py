"""Tests for coverage-stratified (grouped) folds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import UserError
from pipeline.data.splits import coverage_bins, make_folds

N_FOLDS, N_BINS = 5, 10


def _table(n: int = 500, empty_share: float = 0.4, seed: int = 0, group_size: int | None = None) -> pd.DataFrame:
    """Synthetic train table: `empty_share` empty masks, uniform coverage otherwise."""
    rng = np.random.default_rng(seed)
    empty = rng.random(n) < empty_share
    cov = np.where(empty, 0.0, rng.uniform(1e-4, 1.0, n))
    df = pd.DataFrame({"id": [f"{i:05d}" for i in range(n)], "coverage": cov})
    if group_size:
        df["cluster"] = np.arange(n) // group_size
    return df


def test_folds_are_stratified_by_empty_share():
    df = _table()
    folds = make_folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)
    assert folds.shape == (len(df),)
    assert set(np.unique(folds)) == set(range(N_FOLDS))
    empty = df["coverage"].to_numpy() == 0
    overall = empty.mean()
    assert 0.35 < overall < 0.45
    for k in range(N_FOLDS):
        assert abs(empty[folds == k].mean() - overall) <= 0.03, k


def test_fold_sizes_balanced():
    df = _table(n=503)  # not a multiple of the fold count
    folds = make_folds(df, N_FOLDS, N_BINS, seed=3, group_column=None)
    sizes = np.bincount(folds, minlength=N_FOLDS)
    assert sizes.sum() == len(df)
    assert sizes.max() - sizes.min() <= 2


def test_every_coverage_bin_spread_across_folds():
    df = _table()
    folds = make_folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)
    strata = coverage_bins(df["coverage"].to_numpy(), N_BINS)
    table = pd.crosstab(strata, folds)
    assert list(table.index) == list(range(N_BINS + 1))  # every bin populated in this table
    assert table.shape[1] == N_FOLDS
    for b, row in table.iterrows():
        assert row.min() >= 1, f"bin {b} missing from a fold"
        assert row.max() - row.min() <= 1, f"bin {b} unevenly spread: {row.tolist()}"


def test_deterministic_for_seed():
    df = _table()
    a = make_folds(df, N_FOLDS, N_BINS, seed=7, group_column=None)
    b = make_folds(df.copy(), N_FOLDS, N_BINS, seed=7, group_column=None)
    c = make_folds(df, N_FOLDS, N_BINS, seed=8, group_column=None)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_input_table_not_modified():
    df = _table()
    before = df.copy()
    make_folds(df, N_FOLDS, N_BINS, seed=1, group_column=None)
    pd.testing.assert_frame_equal(df, before)


def test_groups_never_span_folds():
    df = _table(group_size=5)  # 100 groups of 5
    folds = make_folds(df, N_FOLDS, N_BINS, seed=42, group_column="cluster")
    per_group = pd.Series(folds).groupby(df["cluster"]).nunique()
    assert len(per_group) == 100
    assert (per_group == 1).all()
    sizes = np.bincount(folds, minlength=N_FOLDS)
    assert (sizes > 0).all() and sizes.sum() == len(df)
    assert sizes.max() - sizes.min() <= 0.3 * len(df) / N_FOLDS
    # still roughly stratified
    empty = df["coverage"].to_numpy() == 0
    for k in range(N_FOLDS):
        assert abs(empty[folds == k].mean() - empty.mean()) <= 0.1


def test_groups_deterministic_for_seed():
    df = _table(group_size=5)
    a = make_folds(df, N_FOLDS, N_BINS, seed=5, group_column="cluster")
    b = make_folds(df, N_FOLDS, N_BINS, seed=5, group_column="cluster")
    c = make_folds(df, N_FOLDS, N_BINS, seed=6, group_column="cluster")
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_string_groups():
    df = _table(n=200, group_size=4)
    df["cluster"] = "g" + df["cluster"].astype(str)
    folds = make_folds(df, 4, N_BINS, seed=0, group_column="cluster")
    assert (pd.Series(folds).groupby(df["cluster"]).nunique() == 1).all()


def test_unknown_group_column_raises_user_error():
    df = _table(group_size=5)
    with pytest.raises(UserError) as info:
        make_folds(df, N_FOLDS, N_BINS, seed=42, group_column="mosaic")
    msg = str(info.value)
    assert "'mosaic'" in msg and "folds.group_column" in msg
    assert "cluster" in msg  # lists the columns that do exist


def test_tiny_top_bin_is_merged_without_warning():
    """A stratum with fewer rows than folds is merged into its neighbour (no sklearn warning)."""
    df = _table()
    cov = df["coverage"].to_numpy().copy()
    cov[cov >= 0.9] = 0.85
    cov[np.flatnonzero(cov > 0)[:2]] = 0.95  # only two rows in the last bin
    df["coverage"] = cov
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = make_folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)
    assert set(np.unique(folds)) == set(range(N_FOLDS))


def test_tiny_first_bin_is_merged_without_warning():
    df = _table()
    cov = df["coverage"].to_numpy().copy()
    cov[(cov > 0) & (cov < 0.1)] = 0.5
    cov[np.flatnonzero(cov > 0)[:2]] = 0.05  # only two rows in bin 1
    df["coverage"] = cov
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)


def test_coverage_bins():
    cov = np.array([0.0, 1e-6, 0.05, 0.0999, 0.1, 0.5, 0.95, 0.999, 1.0])
    bins = coverage_bins(cov, 10)
    assert bins.tolist() == [0, 1, 1, 1, 2, 6, 10, 10, 10]
    assert coverage_bins(np.array([1.0]), 10)[0] == 10  # full coverage lands in the last bin
    assert coverage_bins(np.array([1.0]), 3)[0] == 3


def test_coverage_bins_range_and_monotone():
    cov = np.random.default_rng(0).uniform(0, 1, 1000)
    cov[:100] = 0
    for n in (1, 4, 10):
        bins = coverage_bins(cov, n)
        assert (bins[cov == 0] == 0).all()
        assert bins[cov > 0].min() >= 1 and bins[cov > 0].max() <= n
        order = np.argsort(cov)
        assert (np.diff(bins[order]) >= 0).all()
    assert coverage_bins([0.0, 0.3], 4).tolist() == [0, 2]  # accepts lists
