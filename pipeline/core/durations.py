"""Durations as a user writes them: '2h', '90m', '45s', '1h30m' or a number of seconds."""

from __future__ import annotations

import re

from pipeline.core.errors import UserError


def parse_duration(text: str, option: str) -> float:
    """Seconds from a duration; `option` names the flag in the error (e.g. 'plan --budget')."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise UserError(f"{option}: {text!r} is not a duration such as 2h, 90m, 1h30m or 3600")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)
