"""Evaluation: metrics, plots, TTA, ensembles, calibration, explanations and the report."""
