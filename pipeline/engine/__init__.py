"""Running stages: keys, artifact folders, manifests, the skip/rerun logic, fold-parallel runs,
input fingerprints, the per-step report."""
