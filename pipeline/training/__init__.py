"""Fitting models: the one training loop, checkpoints and schedules, the per-task fold trainers
(segmentation, classifier, embedding), teachers (mean, mutual, distillation), pseudo-labels, the
hard round, sub-classes, fold reuse."""
