"""Losses, built by name: ``build("multi_similarity", alpha=2.0)``.

Each registered loss lives in the module of its name, ``common/losses/<name>.py`` (``"circle"`` ->
:mod:`common.losses.circle`), imported lazily by :data:`LOSSES` on first use of the name, so a run imports
only the losses its config names. Import a class from its module (``from common.losses.circle import
CircleLoss``); this package exports only ``LOSSES``, ``build`` and ``reads_logits``.

Pair/embedding losses take ``(embeddings, labels, ref_emb=None, ref_labels=None)`` and return a scalar
computed on the cosine similarity of L2-normalised embeddings (shared base and helpers:
:mod:`common.losses.base`; miners: :mod:`common.losses.miners`): ``multi_similarity``, ``contrastive``,
``triplet``, ``circle``, ``ntxent``, ``supcon``, ``siglip``, ``align_uniform``, ``prototypical``
(``prototypical`` works on raw embeddings, with ``ref_emb`` as the support set).

Margin/proxy heads own their class weights and take ``(embeddings, labels)`` (shared base:
:mod:`common.losses.margin`): ``normface``, ``cosface``, ``arcface``, ``subcenter_arcface``. Classification
losses take ``(logits, targets)`` (shared base: :mod:`common.losses.classification`): ``cross_entropy``,
``focal``, ``poly1``, ``squentropy``, ``square`` (the rescaled square loss), ``ldam``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from common.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss", package="common.losses")


def build(name: str, /, **hyperparams: Any) -> nn.Module:
    """Build the loss registered as ``name``; unknown names or keywords raise ``BuildError``."""
    return LOSSES.build(name, **hyperparams)


def reads_logits(name: str) -> bool:
    """True for a classification loss (``loss(logits, targets)``, ``inputs = "logits"``): the engine trains and
    evaluates a classifier; a pair loss or a margin head reads embeddings."""
    return getattr(LOSSES.get(name), "inputs", "embeddings") == "logits"


__all__ = ["LOSSES", "build", "reads_logits"]
