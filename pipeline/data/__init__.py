"""Data formats and sets: image and mask reading, binary and long-format RLE, K-class masks,
metadata, the ingest into stores, fold splits, the artifact tables, network input geometry,
datasets and the training loader."""
