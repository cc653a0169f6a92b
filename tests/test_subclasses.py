"""The sub-class split (size, location, texture); the merge back to one map is tested with
squash in test_multiclass_pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training import subclasses


def _disc(shape, centre, radius):
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2).astype(np.uint8)


def test_size_split_labels_whole_objects_by_area():
    train = [_disc((64, 64), (32, 32), r) for r in (2, 3, 4, 10, 12, 14)]
    split = subclasses.fit("size", 2, train, [np.zeros((64, 64), np.uint8)] * 6)
    mask = _disc((64, 64), (10, 10), 3) | _disc((64, 64), (40, 40), 13)
    labels = split.label(mask, np.zeros((64, 64), np.uint8))
    assert set(np.unique(labels[_disc((64, 64), (10, 10), 3) > 0])) == {1}
    assert set(np.unique(labels[_disc((64, 64), (40, 40), 13) > 0])) == {2}
    assert (labels[mask == 0] == 0).all()


def test_location_split_by_centroid_row():
    train = [_disc((60, 40), (y, 20), 4) for y in (5, 10, 15, 45, 50, 55)]
    split = subclasses.fit("location", 2, train, [np.zeros((60, 40), np.uint8)] * 6)
    labels = split.label(_disc((60, 40), (8, 20), 4) | _disc((60, 40), (52, 20), 4), np.zeros((60, 40), np.uint8))
    assert labels[8, 20] == 1 and labels[52, 20] == 2


def test_texture_split_separates_flat_from_noisy_regions():
    rng = np.random.default_rng(0)
    image = np.full((48, 64), 100, np.uint8)
    image[:, 32:] = rng.integers(0, 256, size=(48, 32))
    mask = np.zeros((48, 64), np.uint8)
    mask[8:40, 8:56] = 1
    split = subclasses.fit("texture", 2, [mask], [image])
    labels = split.label(mask, image)
    left, right = labels[12:36, 10:26], labels[12:36, 40:54]
    assert np.bincount(left.ravel()).argmax() != np.bincount(right.ravel()).argmax()
    assert set(np.unique(labels[mask > 0])) <= {1, 2} and (labels[mask == 0] == 0).all()


def test_fit_needs_enough_objects_and_a_known_criterion():
    with pytest.raises(ValueError, match="fewer than 3 sub-classes"):
        subclasses.fit("size", 3, [_disc((20, 20), (10, 10), 3)], [np.zeros((20, 20), np.uint8)])
    with pytest.raises(ValueError, match="not one of size, location, texture"):
        subclasses.fit("colour", 2, [], [])


def test_ties_and_constant_texture_are_refused():
    same = [_disc((30, 30), (15, 15), 3)] * 6  # six objects of one area: no 3 size bins
    with pytest.raises(ValueError, match="tie too often"):
        subclasses.fit("size", 3, same, [np.zeros((30, 30), np.uint8)] * 6)
    with pytest.raises(ValueError, match="fewer than 2 distinct"):
        subclasses.fit("texture", 2, [np.ones((20, 20), np.uint8)], [np.full((20, 20), 9, np.uint8)])


def test_empty_mask_labels_nothing():
    split = subclasses.fit("size", 2, [_disc((32, 32), (16, 16), r) for r in (2, 8)], [np.zeros((32, 32), np.uint8)] * 2)
    assert not split.label(np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)).any()
