"""Backbones and embedding heads, built by name through ``MODELS``."""

from common.models.backbones import MODELS, EmbeddingNet, build

__all__ = ["MODELS", "EmbeddingNet", "build"]
