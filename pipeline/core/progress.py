"""Progress bars (tqdm) for the loops that take more than a few seconds: shown on a terminal,
silent off one (a log file, CI, a notebook's captured stderr) and on torchrun ranks other than 0."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from pipeline.core import distributed

T = TypeVar("T")


def bar(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    """`iterable`, with a bar on stderr while it runs (redrawn at most every 2 s, cleared after)."""
    # disable=None: tqdm itself turns the bar off when stderr is not a terminal.
    off = None if distributed.is_main() else True
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=off, leave=False, mininterval=2.0, dynamic_ncols=True))
