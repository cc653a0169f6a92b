"""Tests for coverage-stratified (grouped) folds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import UserError
from pipeline.data.splits import class_strata, coverage_bins, coverage_strata, make_folds

N_FOLDS, N_BINS = 5, 10


def _folds(df, n_folds, n_bins, **kw):
    """make_folds on the coverage strata, as the folds stage calls it by default."""
    return make_folds(df, n_folds, coverage_strata(df["coverage"].to_numpy(), n_folds, n_bins), **kw)


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
    folds = _folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)
    assert folds.shape == (len(df),)
    assert set(np.unique(folds)) == set(range(N_FOLDS))
    empty = df["coverage"].to_numpy() == 0
    overall = empty.mean()
    assert 0.35 < overall < 0.45
    for k in range(N_FOLDS):
        assert abs(empty[folds == k].mean() - overall) <= 0.03, k


def test_fold_sizes_balanced():
    df = _table(n=503)  # not a multiple of the fold count
    folds = _folds(df, N_FOLDS, N_BINS, seed=3, group_column=None)
    sizes = np.bincount(folds, minlength=N_FOLDS)
    assert sizes.sum() == len(df)
    assert sizes.max() - sizes.min() <= 2


def test_every_coverage_bin_spread_across_folds():
    df = _table()
    folds = _folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)
    strata = coverage_bins(df["coverage"].to_numpy(), N_BINS)
    table = pd.crosstab(strata, folds)
    assert list(table.index) == list(range(N_BINS + 1))  # every bin populated in this table
    assert table.shape[1] == N_FOLDS
    for b, row in table.iterrows():
        assert row.min() >= 1, f"bin {b} missing from a fold"
        assert row.max() - row.min() <= 1, f"bin {b} unevenly spread: {row.tolist()}"


def test_deterministic_for_seed():
    df = _table()
    a = _folds(df, N_FOLDS, N_BINS, seed=7, group_column=None)
    b = _folds(df.copy(), N_FOLDS, N_BINS, seed=7, group_column=None)
    c = _folds(df, N_FOLDS, N_BINS, seed=8, group_column=None)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_input_table_not_modified():
    df = _table()
    before = df.copy()
    _folds(df, N_FOLDS, N_BINS, seed=1, group_column=None)
    pd.testing.assert_frame_equal(df, before)


def test_groups_never_span_folds():
    df = _table(group_size=5)  # 100 groups of 5
    folds = _folds(df, N_FOLDS, N_BINS, seed=42, group_column="cluster")
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
    a = _folds(df, N_FOLDS, N_BINS, seed=5, group_column="cluster")
    b = _folds(df, N_FOLDS, N_BINS, seed=5, group_column="cluster")
    c = _folds(df, N_FOLDS, N_BINS, seed=6, group_column="cluster")
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_string_groups():
    df = _table(n=200, group_size=4)
    df["cluster"] = "g" + df["cluster"].astype(str)
    folds = _folds(df, 4, N_BINS, seed=0, group_column="cluster")
    assert (pd.Series(folds).groupby(df["cluster"]).nunique() == 1).all()


def test_unknown_group_column_raises_user_error():
    df = _table(group_size=5)
    with pytest.raises(UserError) as info:
        _folds(df, N_FOLDS, N_BINS, seed=42, group_column="mosaic")
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
        folds = _folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)
    assert set(np.unique(folds)) == set(range(N_FOLDS))


def test_tiny_first_bin_is_merged_without_warning():
    df = _table()
    cov = df["coverage"].to_numpy().copy()
    cov[(cov > 0) & (cov < 0.1)] = 0.5
    cov[np.flatnonzero(cov > 0)[:2]] = 0.05  # only two rows in bin 1
    df["coverage"] = cov
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _folds(df, N_FOLDS, N_BINS, seed=42, group_column=None)


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


def _presence(n: int = 600, seed: int = 0) -> np.ndarray:
    """Magnetic-tile-like presence: most images free, five classes of 4-15%, one per image,
    a few images with two."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(6, n, p=[0.7, 0.09, 0.07, 0.05, 0.03, 0.06])
    presence = np.zeros((n, 5), bool)
    presence[cls > 0, cls[cls > 0] - 1] = True
    presence[:3, 3] = presence[:3, 0] = True  # a combination rarer than the folds: merged
    return presence


def test_class_strata_spread_every_class_over_the_folds():
    presence = _presence()
    df = pd.DataFrame({"id": [f"{i:05d}" for i in range(len(presence))], "coverage": presence.any(1) * 0.1})
    strata = class_strata(presence, N_FOLDS)
    assert np.bincount(strata)[np.bincount(strata) > 0].min() >= N_FOLDS
    folds = make_folds(df, N_FOLDS, strata, seed=1, group_column=None)
    for c in range(5):
        per_fold = np.bincount(folds[presence[:, c]], minlength=N_FOLDS)
        assert per_fold.max() - per_fold.min() <= 2, (c, per_fold)  # within two (merged combinations count twice)


def test_class_strata_beat_coverage_strata_on_the_rarest_class():
    # Coverage bins know nothing of the class: across seeds the rarest class's fold counts
    # spread further apart than under class strata, which hold them within one image.
    presence = _presence()
    df = pd.DataFrame({"id": [f"{i:05d}" for i in range(len(presence))], "coverage": presence.any(1) * 0.1})
    spread = {"cov": [], "cls": []}
    for seed in range(8):
        for name, strata in (
            ("cov", coverage_strata(df["coverage"].to_numpy(), N_FOLDS, N_BINS)),
            ("cls", class_strata(presence, N_FOLDS)),
        ):
            per_fold = np.bincount(make_folds(df, N_FOLDS, strata, seed=seed, group_column=None)[presence[:, 3]], minlength=N_FOLDS)
            spread[name].append(per_fold.max() - per_fold.min())
    assert max(spread["cls"]) <= 1 < max(spread["cov"])


def test_class_strata_keep_groups_together():
    presence = _presence()
    df = pd.DataFrame(
        {"id": [f"{i:05d}" for i in range(len(presence))], "coverage": presence.any(1) * 0.1, "g": np.arange(len(presence)) // 3}
    )
    folds = make_folds(df, N_FOLDS, class_strata(presence, N_FOLDS), seed=0, group_column="g")
    assert (df.assign(f=folds).groupby("g")["f"].nunique() == 1).all()
