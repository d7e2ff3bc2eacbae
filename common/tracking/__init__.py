"""MLflow tracking: one experiment per paper, one run per (method, seed, dataset), provenance tags."""

from common.tracking.mlflow_tracking import RunTracker, mark_abandoned, tracking_uri

__all__ = ["RunTracker", "mark_abandoned", "tracking_uri"]
