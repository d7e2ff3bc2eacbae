"""Pair/embedding losses, built by name: ``build("multi_similarity", alpha=2.0)``.

Every loss takes ``(embeddings, labels, ref_emb=None, ref_labels=None)`` and returns a scalar computed on the
cosine similarity of L2-normalised embeddings (see :mod:`common.losses.base`). Registered names:
``multi_similarity``, ``contrastive``, ``triplet``; ``circle``, ``ntxent``, ``supcon``, ``siglip``,
``align_uniform``, ``prototypical`` (:mod:`common.losses.contrastive`; ``prototypical`` works on raw
embeddings, with ``ref_emb`` as the support set).

Margin/proxy heads (:mod:`common.losses.proxy`) own their class weights and take ``(embeddings, labels)``:
``normface``, ``cosface``, ``arcface``, ``subcenter_arcface``. Classification losses
(:mod:`common.losses.classification`) take ``(logits, targets)``: ``cross_entropy``, ``focal``, ``poly1``,
``squentropy``, ``ldam``.
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
from . import classification, contrastive, miners, pair, proxy  # noqa: E402
from .base import EmbeddingLoss  # noqa: E402
from .classification import (  # noqa: E402
    ClassificationLoss,
    CrossEntropyLoss,
    DeferredReweighting,
    FocalLoss,
    LDAMLoss,
    Poly1Loss,
    SquentropyLoss,
    effective_number_weights,
)
from .contrastive import (  # noqa: E402
    AlignUniformLoss,
    CircleLoss,
    NTXentLoss,
    PrototypicalLoss,
    SigLipLoss,
    SupConLoss,
)
from .miners import MultiSimilarityMiner  # noqa: E402
from .pair import ContrastiveLoss, MultiSimilarityLoss, TripletMarginLoss  # noqa: E402
from .proxy import ArcFaceHead, CosFaceHead, MarginHead, NormFaceHead, SubCenterArcFaceHead  # noqa: E402

__all__ = [
    "LOSSES",
    "AlignUniformLoss",
    "ArcFaceHead",
    "CircleLoss",
    "ClassificationLoss",
    "ContrastiveLoss",
    "CosFaceHead",
    "CrossEntropyLoss",
    "DeferredReweighting",
    "EmbeddingLoss",
    "FocalLoss",
    "LDAMLoss",
    "MarginHead",
    "MultiSimilarityLoss",
    "MultiSimilarityMiner",
    "NTXentLoss",
    "NormFaceHead",
    "Poly1Loss",
    "PrototypicalLoss",
    "SigLipLoss",
    "SquentropyLoss",
    "SubCenterArcFaceHead",
    "SupConLoss",
    "TripletMarginLoss",
    "build",
    "classification",
    "contrastive",
    "effective_number_weights",
    "miners",
    "pair",
    "proxy",
]
