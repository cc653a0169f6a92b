"""What an ingest reads and how it fails: where a dataset lives (`Sources`, its paths
normalised), and the one error that lists every problem found, one line each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.core.errors import UserError
from pipeline.data.imagehead import DEFAULT_MAX_PIXELS
from pipeline.data.multiclass import Classes

_PATHS = (
    "train_images",
    "train_masks",
    "train_rle_csv",
    "test_images",
    "sample_submission",
)


@dataclass
class Sources:
    """Where a dataset lives. ``train_images=None`` ingests the test set alone;
    then pass the train ingest's channel count so both stores match."""

    train_images: Path | None
    train_masks: Path | dict[str, Path] | None = None  # a folder, or a folder per class
    train_rle_csv: Path | None = None
    test_images: Path | None = None
    sample_submission: Path | None = None
    metadata_csv: list[Path] = field(default_factory=list)
    mask_threshold: int = 0
    mask_invert: bool = False  # one binary class: foreground = mask pixel <= threshold (membrane drawn as 0)
    channels: Literal["auto", 1, 3] = "auto"
    id_column: str = "id"
    rle_column: str = "rle_mask"
    max_pixels: int = DEFAULT_MAX_PIXELS  # refused from the header, before decoding
    # K >= 2 class names (empty: one binary class, as before); a single train_masks folder then
    # holds label images. `exclusive`: a pixel has one class (an overlap is a problem).
    classes: tuple[str, ...] = ()
    exclusive: bool = False

    def __post_init__(self) -> None:
        for name in _PATHS:
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, {k: Path(v) for k, v in value.items()})
            elif value is not None:
                setattr(self, name, Path(value))
        if isinstance(self.train_masks, dict) and not self.classes:
            self.classes = tuple(self.train_masks)
        self.classes = tuple(self.classes)
        self.metadata_csv = [Path(p) for p in self.metadata_csv]
        if str(self.channels) in ("1", "3"):
            self.channels = int(self.channels)  # YAML may give "1"

    def paths(self) -> list[Path]:
        """Every file and folder the dataset is read from."""
        out = [*self.metadata_csv]
        for name in _PATHS:
            value = getattr(self, name)
            out += list(value.values()) if isinstance(value, dict) else [value] if value is not None else []
        return out

    def multiclass(self) -> Classes | None:
        """The classes of a K-class task; None for one binary class."""
        if len(self.classes) > 1 or isinstance(self.train_masks, dict):
            return Classes(self.classes, self.exclusive)
        return None


class IngestError(UserError):
    """Validation failed; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return format_problems(self.problems)


def format_problems(problems: list[str], limit: int = 20) -> str:
    """First ``limit`` lines, then how many more there are."""
    lines = list(problems[:limit])
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more problems")
    return "\n".join(lines)
