"""The pipeline's log lines reach stdout from the CLI and the API, warnings marked."""

from __future__ import annotations

import logging

from pipeline.core import logs


def test_setup_prints_progress_and_marks_warnings(capsys):
    logger = logging.getLogger("pipeline")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers.clear()
    try:
        logs.setup()
        logs.setup()  # a second call adds nothing: each line once
        logging.getLogger("pipeline.training.loop").info("fold0 epoch 1")
        logging.getLogger("pipeline.data.metadata").warning("depths.csv: column z is not numeric")
        assert capsys.readouterr().out == "fold0 epoch 1\nwarning: depths.csv: column z is not numeric\n"
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
