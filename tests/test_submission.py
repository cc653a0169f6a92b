"""The submission's header: data.id_column and submit.rle_column, equal to the sample
submission's, refused early (at test ingest) when they cannot match."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline import cache
from pipeline.errors import UserError
from pipeline.submission import header_problem


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
        cache.run_stage(cfg, "ingest_test")
    assert not cache.stage_dir(cfg, "ingest_test").exists()
