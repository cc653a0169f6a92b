"""From probability maps to masks: thresholds, minimum areas and gates, the scorer's features, the
LightGBM LB-score predictor, and the fitted policy."""
