"""Where the pipeline's log lines go when nobody else decided: stdout, one line each, warnings
marked. Library modules only call logging.getLogger(__name__); the CLI and the Python API call
setup() so that epochs, reused folds and restores show while a stage runs."""

from __future__ import annotations

import logging
import sys


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def setup() -> None:
    """INFO and up of the `pipeline` loggers to stdout; a no-op when it already has a handler
    (a second call, or an application that configured it)."""
    logger = logging.getLogger("pipeline")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)  # flushes each line: a log file shows progress
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's handlers (if any) would print each line twice
