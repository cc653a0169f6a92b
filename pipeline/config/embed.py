"""The embed section: image embeddings by metric learning, PCA, neighbours, clusters."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import fields
from pipeline.config.blocks import (
    EncoderCfg,
    FitCfg,
)
from pipeline.config.fields import Problems, valid


@dataclass
class EmbedModelCfg(EncoderCfg):
    """An encoder whose stages are pooled, L2-normalised and concatenated (pipeline/training/embedding.py)."""

    decoder_attention: str | None = valid(None)  # no decoder
    stages: list[int] = valid(min=1, max=5, nonempty=True, distinct=True)  # encoder stages pooled into the embedding
    projection: int = valid(min=1)  # width of the contrastive projection head


@dataclass
class EmbedTrainCfg(FitCfg):
    scheduler: str = valid("cosine", "onecycle", "none")  # no loss phases to restart on
    swa_epochs: int = valid(0)  # SWA's BatchNorm update reads single images, the embed batches hold pairs of views


@dataclass
class EmbedCfg:
    """Image embeddings: metric learning with a classification constraint, PCA, neighbours,
    clusters, near-duplicates and adversarial validation (pipeline/training/embedding.py, retrieval.py)."""

    enabled: bool
    model: EmbedModelCfg
    size: int = valid(min=32)  # images resized to size x size (a multiple of 32)
    train: EmbedTrainCfg
    temperature: float = valid(above=0)  # of the contrastive (NT-Xent) loss over two views
    constraint: float = valid(min=0)  # weight of the classification constraint (empty mask, coverage bin); 0 = off
    pca_dim: int = valid(min=0)  # PCA components (0 = the pooled embedding as it is)
    whiten: bool  # PCA whitening (each component scaled to unit variance)
    neighbours: int = valid(min=1)  # k nearest neighbours per image in neighbours.csv
    clusters: int = valid(min=2)  # KMeans clusters (folds.clusters groups by them)
    duplicate_similarity: float = valid(min=-1, max=1)  # cosine similarity from which a pair is a near-duplicate
    patches: bool  # images larger than `size` are also embedded per patch (patch_embeddings.npz)

    def check(self) -> Problems:
        return [] if self.size % fields.STRIDE == 0 else [("size", f"got {self.size}, must be a multiple of {fields.STRIDE}")]
