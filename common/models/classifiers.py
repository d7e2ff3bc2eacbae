"""A classifier on an embedding network: the logits that classification losses read.

* ``linear``: ``z = W f + b``, the usual last layer.
* ``cosine``: ``z_j = cos(f, w_j)`` of the L2-normalised embedding and class weight, in [-1, 1] and without
  a bias. Cao et al.'s LDAM (NeurIPS 2019) reads these logits (the official code's ``NormedLinear``,
  ``use_norm=True`` for LDAM), scaled by its ``s``; a loss that does not scale them learns little.

The wrapped network stays reachable as ``.embedder`` (its output is the embedding that retrieval or a probe
reads); ``embedding_dim`` is the embedder's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLASSIFIERS = ("linear", "cosine")


class CosineLinear(nn.Module):
    """``cos(x, w_j)`` for every class ``j``: no bias, weights initialised uniformly like ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


class Classifier(nn.Module):
    """``embedder`` (images -> embeddings) followed by a ``linear`` or ``cosine`` layer to ``num_classes``."""

    def __init__(self, embedder: nn.Module, num_classes: int, kind: str = "linear") -> None:
        super().__init__()
        if kind not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}; got {kind!r}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        dim = embedder.embedding_dim or embedder.feature_dim
        self.embedder = embedder
        self.embedding_dim = dim
        self.kind = kind
        self.classifier = nn.Linear(dim, num_classes) if kind == "linear" else CosineLinear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embedder(images))
