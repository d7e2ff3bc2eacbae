"""Evaluation metrics (building blocks: torch and the standard library only)."""

from .retrieval import kmeans, nearest_neighbors, normalized_mutual_info, retrieval_metrics

__all__ = ["kmeans", "nearest_neighbors", "normalized_mutual_info", "retrieval_metrics"]
