"""Images beside each other: retrieval and clusters over embeddings, the mosaic of touching tiles
and its context, KNN and edge features, balance weights."""
