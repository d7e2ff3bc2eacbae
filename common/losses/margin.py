"""Shared base of the margin/proxy heads: ``normface``, ``cosface``, ``arcface``, ``subcenter_arcface``, each
in the module of its name; this module registers nothing.

A head is an ``nn.Module`` that owns the class weights, ``weight`` of shape
``(num_classes * K, embedding_dim)`` (``K`` sub-centers per class, 1 except for sub-center ArcFace; row
``c * K + k`` is sub-center ``k`` of class ``c``, the layout of the official sub-center code and of
pytorch-metric-learning), so it is saved, optimised and wrapped with the model. Called as
``loss(embeddings, labels) -> scalar``::

    cos[i, c] = max_k < x_i / |x_i|, w_{cK+k} / |w_{cK+k}| >        (K = 1: the plain cosine)
    z[i, c]   = s * psi(cos[i, y_i])  if c == y_i  else  s * cos[i, c]
    L         = mean_i CE(z_i, y_i)

with ``psi`` each head's margin on the target cosine (the identity for NormFace). ``logits(embeddings)``
returns ``s * cos`` without the margin, for prediction and evaluation. Everything is one matrix product and
elementwise ops on the batch; the head has the dtype and device of its weight, like any layer (``.to()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_inputs, check_int, check_real


class MarginHead(nn.Module):
    """Shared base of the heads: class weights, cosine matrix, margin on the target logit, cross-entropy.

    Subclasses implement :meth:`apply_margin` on the target cosines. Weights are initialised from
    ``N(0, 0.01^2)`` as in the official insightface code (``fc7_weight``, ``mx.init.Normal(0.01)``); only
    their direction matters.
    """

    def __init__(self, num_classes: int, embedding_dim: int, scale: float, subcenters: int = 1) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 1)
        self.subcenters = check_int("subcenters", subcenters, 1)
        self.scale = check_real("scale", scale, 0.0, low_open=True)
        self.weight = nn.Parameter(torch.empty(self.num_classes * self.subcenters, self.embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.01)

    def _check(self, embeddings: Tensor, labels: Tensor | None = None) -> None:
        if labels is not None:
            check_inputs(embeddings, labels)
        elif embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}")
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings must have dim {self.embedding_dim}, got {embeddings.shape[1]}")

    def subcenter_cosine(self, embeddings: Tensor) -> Tensor:
        """Cosines to every sub-center, shape ``(batch, num_classes, K)``."""
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T
        return cos.view(len(embeddings), self.num_classes, self.subcenters)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """``cos[i, c]``, the cosine to class ``c`` (its nearest sub-center), ``(batch, num_classes)``."""
        cos = self.subcenter_cosine(embeddings)
        return cos.squeeze(2) if self.subcenters == 1 else cos.max(dim=2).values

    def logits(self, embeddings: Tensor) -> Tensor:
        """``s * cos``: the scaled cosine logits without the margin (prediction, evaluation)."""
        self._check(embeddings)
        return self.scale * self.cosine(embeddings)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        """``psi(cos)`` applied to the target cosines."""
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._check(embeddings, labels)
        cos = self.cosine(embeddings)
        target = labels.unsqueeze(1)
        logits = cos.scatter(1, target, self.apply_margin(cos.gather(1, target)))
        return F.cross_entropy(self.scale * logits, labels)

    def extra_repr(self) -> str:
        sub = f", subcenters={self.subcenters}" if self.subcenters > 1 else ""
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}{sub}, scale={self.scale}"
