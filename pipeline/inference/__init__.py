"""Test-time prediction from fold model files: TTA at each image's size, AdaBN, saved maps, the
OOF-fitted blend and reading the ensemble's outputs."""
