"""Metrics, ROC curves, scoring of probability maps and of long-format submissions."""
