"""Evaluation metrics (building blocks: torch and the standard library only)."""

from .classification import (
    ReliabilityBins,
    expected_calibration_error,
    per_class_accuracy,
    reliability_diagram_bins,
    shot_accuracy,
    top1_accuracy,
)
from .representation import alignment, knn_accuracy, knn_predict, uniformity
from .retrieval import kmeans, nearest_neighbors, normalized_mutual_info, retrieval_metrics
from .verification import tar_at_far

__all__ = [
    "ReliabilityBins",
    "alignment",
    "expected_calibration_error",
    "kmeans",
    "knn_accuracy",
    "knn_predict",
    "nearest_neighbors",
    "normalized_mutual_info",
    "per_class_accuracy",
    "reliability_diagram_bins",
    "retrieval_metrics",
    "shot_accuracy",
    "tar_at_far",
    "top1_accuracy",
    "uniformity",
]
