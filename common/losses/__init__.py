"""Pair/embedding losses, built by name: ``build("multi_similarity", alpha=2.0)``.

Every loss takes ``(embeddings, labels, ref_emb=None, ref_labels=None)`` and returns a scalar computed on the
cosine similarity of L2-normalised embeddings (see :mod:`common.losses.base`). Registered names:
``multi_similarity``, ``contrastive``, ``triplet``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from common.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")


def build(name: str, /, **hyperparams: Any) -> nn.Module:
    """Build the loss registered as ``name``; unknown names or keywords raise ``BuildError``."""
    return LOSSES.build(name, **hyperparams)


# Imported after LOSSES exists: importing these modules registers their losses.
from . import miners, pair  # noqa: E402
from .base import EmbeddingLoss  # noqa: E402
from .miners import MultiSimilarityMiner  # noqa: E402
from .pair import ContrastiveLoss, MultiSimilarityLoss, TripletMarginLoss  # noqa: E402

__all__ = [
    "LOSSES",
    "ContrastiveLoss",
    "EmbeddingLoss",
    "MultiSimilarityLoss",
    "MultiSimilarityMiner",
    "TripletMarginLoss",
    "build",
    "miners",
    "pair",
]
