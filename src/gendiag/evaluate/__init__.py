"""Evaluation: metrics and bootstrap confidence intervals for prediction files."""
