"""The submission's header: data.id_column and submit.rle_column, equal to the sample
submission's, refused early (at test ingest) when they cannot match."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import UserError
from pipeline.data.rle import rle_encode
from pipeline.engine import cache
from pipeline.stages import GRAPH
from pipeline.submission.binary import header_problem, score_submission


def _sample(path, header):
    pd.DataFrame({h: [] for h in header}).to_csv(path, index=False)
    return path


def test_header_problem(tmp_path):
    sample = _sample(tmp_path / "sample_submission.csv", ["ImageId", "EncodedPixels"])
    assert header_problem(sample, ["ImageId", "EncodedPixels"]) is None
    assert header_problem(None, ["id", "rle_mask"]) is None
    problem = header_problem(sample, ["id", "rle_mask"])
    assert str(sample) in problem and "ImageId,EncodedPixels" in problem and "id,rle_mask" in problem
    assert "\n" not in problem


def test_test_ingest_refuses_a_header_that_cannot_match(smoke_cfg, smoke_data, tmp_path):
    ids = sorted(p.stem for p in (smoke_data / "test" / "images").glob("*.png"))
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"ImageId": ids, "EncodedPixels": ""}).to_csv(sample, index=False)
    cfg = smoke_cfg(f"data.sample_submission={sample}", artifacts=tmp_path / "art")
    with pytest.raises(UserError, match="differs from the submission's id,rle_mask"):
        cache.run_stage(GRAPH, cfg, "ingest_test")
    assert not cache.stage_dir(GRAPH, cfg, "ingest_test").exists()


def test_a_sample_with_a_byte_order_mark_matches(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_bytes("\ufeffImageId,EncodedPixels\na,\n".encode())
    assert header_problem(sample, ["ImageId", "EncodedPixels"]) is None


def test_a_submission_with_another_id_column_is_scored(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = np.zeros((4, 4), np.uint8)
    truth[1:3, 1:3] = 255
    cv2.imwrite(str(masks / "a.png"), truth)
    cv2.imwrite(str(masks / "b.png"), np.zeros((4, 4), np.uint8))
    csv = tmp_path / "sub.csv"
    pd.DataFrame({"ImageId": ["a", "b"], "EncodedPixels": [rle_encode(truth > 0), ""]}).to_csv(csv, index=False)
    assert score_submission(csv, masks) == (1.0, 2)


def test_score_reads_a_zero_drawn_foreground_with_invert(tmp_path):
    """data.mask_invert: the hidden masks draw the foreground (membranes) as 0."""
    masks = tmp_path / "masks"
    masks.mkdir()
    drawn = np.full((8, 8), 255, np.uint8)
    drawn[2:4, :] = 0  # the foreground
    cv2.imwrite(str(masks / "a.png"), drawn)
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": ["a"], "rle_mask": [rle_encode(drawn == 0)]}).to_csv(sub, index=False)
    assert score_submission(sub, masks, "dice", invert=True)[0] == 1.0
    assert score_submission(sub, masks, "dice")[0] < 0.5
