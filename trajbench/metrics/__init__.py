"""Metrics (see the evaluation issue)."""
