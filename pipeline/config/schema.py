"""Typed config sections. Values (defaults included) live in configs/base.yaml, not here:
these classes only say which keys exist, what type each has and which values are valid.

A field's valid values are declared next to it with `valid(...)`; a section's `check()` adds
what spans its fields, as (field, problem) pairs (field "" for the section as a whole).
pipeline.config.validate applies both at load, and the rules that span sections. The top-level
sections and the whole Config are here; the larger sections have a module each (segment,
classify, teachers, embed, output) and share the blocks module."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.classify import ClassifyCfg
from pipeline.config.embed import EmbedCfg
from pipeline.config.fields import Problems, valid
from pipeline.config.output import EnsembleCfg, ScorerCfg, SubmitCfg
from pipeline.config.segment import SegmentCfg
from pipeline.config.teachers import DistillCfg, PseudoCfg


@dataclass
class ExperimentCfg:
    name: str  # becomes a folder name: letters, digits and ._- only
    seed: int
    artifacts: str
    device: str = valid("auto", "cpu", "cuda")
    threads: int = valid(min=0)  # torch CPU threads; 0 keeps torch's default
    deterministic: bool  # cuDNN deterministic algorithms on GPUs (slower); not hashed
    compile: bool  # torch.compile the segmentation models for OOF and test inference; not hashed
    batch_tta: bool  # the TTA views of a batch in one forward pass (OOF and test inference); not hashed
    tracking: bool  # log each stage run to MLflow (pipeline/engine/tracking.py); not hashed
    tracking_uri: str  # the MLflow store; "" = sqlite:///<artifacts>/mlflow.db; not hashed

    def check(self) -> Problems:
        ok = self.name.strip(".") and all(c.isascii() and (c.isalnum() or c in "._-") for c in self.name)
        return [] if ok else [("name", f"got {self.name!r}, must be letters, digits and . _ - only (it names a folder)")]


@dataclass
class DataCfg:
    train_images: str
    train_masks: str | dict[str, str] | None  # a folder (binary masks or label images), or {class: folder}
    train_rle_csv: str | None
    id_column: str
    rle_column: str
    test_images: str | None
    sample_submission: str | None
    metadata: list[str]
    mask_threshold: int = valid(min=0)
    mask_invert: bool  # one binary class: foreground is where the mask is <= mask_threshold
    channels: str | int  # auto | 1 | 3
    max_pixels: int  # refuse an image whose header declares more pixels, before decoding it
    solution_masks: str | None  # hidden test masks (a folder, or a long-format CSV for K classes), only to score a demo
    classes: list[str] = valid(distinct=True)  # K > 1 class names (empty: one binary class)
    exclusive: bool  # the classes exclude each other (label images; segment.target multiclass)

    @property
    def n_classes(self) -> int:
        """K: the number of foreground classes (1 for a binary task)."""
        return max(len(self.classes), 1)

    def check(self) -> Problems:
        out = []
        if len(self.classes) > 8:
            out.append(("classes", f"got {len(self.classes)} classes, at most 8 (bits of the uint8 mask store)"))
        if len(self.classes) == 1:
            out.append(("classes", f"got one class {self.classes}; a binary task leaves classes empty"))
        if isinstance(self.train_masks, dict) and list(self.train_masks) != list(self.classes):
            out.append(
                ("train_masks", f"folders for {', '.join(self.train_masks)}; data.classes is {self.classes} (same names, same order)")
            )
        if (self.train_masks is None) == (self.train_rle_csv is None):
            out.append(("", "set exactly one of train_masks and train_rle_csv"))
        if self.mask_invert and len(self.classes) > 1:
            # K classes come as label images or class rows: there is no one foreground to invert
            out.append(("mask_invert", "applies to one binary class; K classes are read as given"))
        if str(self.channels) not in ("auto", "1", "3"):
            out.append(("", f"channels must be 'auto', '1' or '3', got {self.channels!r}"))
        return out


@dataclass
class MosaicCfg:
    enabled: bool  # group touching tiles (found from their edges) so they share a fold
    margin: float = valid(above=0, max=1)  # ratio test: best edge cost below margin x the runner-up's


@dataclass
class FoldsCfg:
    n_folds: int = valid(min=2)
    coverage_bins: int = valid(min=1)
    group_column: str | None
    mosaic: MosaicCfg
    seed: int
    clusters: bool  # group by the embed stage's clusters (joined with the mosaic groups when both are on)
    duplicates: bool  # keep exact and near-duplicate images in one fold (joined with any other grouping)
    stratify: str = valid("coverage", "classes")  # classes: by each image's class combination

    def check(self) -> Problems:
        if self.group_column and (self.mosaic.enabled or self.clusters):
            return [("", "group_column and mosaic.enabled or clusters both set; choose one way of grouping")]
        return []


@dataclass
class Config:
    experiment: ExperimentCfg
    data: DataCfg
    folds: FoldsCfg
    segment: SegmentCfg
    classify: ClassifyCfg
    pseudo: PseudoCfg
    scorer: ScorerCfg
    ensemble: EnsembleCfg
    submit: SubmitCfg
    distill: DistillCfg
    embed: EmbedCfg
    source: str = field(default="", compare=False, metadata={"internal": True})  # the file it came from
