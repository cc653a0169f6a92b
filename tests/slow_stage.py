"""Subprocess helper (not a test module): the CLI with one more, slow stage `t_slow`.

`python tests/slow_stage.py t_slow --config FILE [--set ...] [--force]` runs the real
`pipeline.__main__.main` (its signal handling included) on a stage that writes `partial.txt` into
its folder and then sleeps, so that a test can signal, kill or contend with it mid-run. The
stage's key depends only on its name, sections and version, so a test adding a stage of the
same name to its own graph gets the same folder.
"""

from __future__ import annotations

import os
import sys
import time

from pipeline.__main__ import main
from pipeline.engine import cache
from pipeline.stages import GRAPH

SLOW = cache.Stage("t_slow", ("pseudo.rounds",), (), lambda ctx: _slow(ctx), doc="test: slow")


def _slow(ctx: cache.Context) -> dict:
    ctx.dir.mkdir(parents=True, exist_ok=True)
    (ctx.dir / "partial.txt").write_text(str(os.getpid()))  # the test waits for this file
    time.sleep(60)
    return {}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], graph=GRAPH.with_stages(SLOW)))
