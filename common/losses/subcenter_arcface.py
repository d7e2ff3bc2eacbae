"""Sub-center ArcFace head: Deng, Guo, Liu, Gong, Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition
by Large-scale Noisy Web Faces", ECCV 2020: ``K`` sub-centers per class under the ArcFace margin
(:mod:`common.losses.arcface`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import LOSSES
from .arcface import ArcFaceHead
from .margin import MarginHead


@LOSSES.register("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    r"""Sub-center ArcFace: Deng, Guo, Liu, Gong, Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces", ECCV 2020, Sec. 3: ``K`` sub-centers per class; the cosine to class ``c`` is
    the largest over its sub-centers, ``cos(theta_{i,c}) = max_k <x_i, w_{c,k}>`` (normalised), and the
    :class:`ArcFaceHead` loss (same ``s``, ``m``, threshold) is applied to these class cosines.

    Defaults ``subcenters = 3`` (the paper's choice, and ``config.loss_K = 3`` in the official
    ``recognition/subcenter_arcface/sample_config.py``), ``s = 64``, ``m = 0.5``. The official training
    symbol (``train_parall.py``) reshapes the cosines to ``(-1, classes, K)`` and takes the max, as here;
    pytorch-metric-learning's ``SubCenterArcFaceLoss`` does the same with the same weight layout (its
    ``W`` is our ``weight.T``): values and gradients agree (tested).

    :meth:`dominant_subcenter` gives, per sample, the index of the nearest sub-center of its own class. The
    paper's observation is that clean samples gather at one dominant sub-center per class
    and noisy ones at the others; the official ``drop.py`` takes the most frequent of these indices over a
    class as its dominant sub-center and drops samples farther than 75 degrees from it.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        scale: float = 64.0,
        margin: float = 0.5,
        subcenters: int = 3,
        easy_margin: bool = False,
    ) -> None:
        MarginHead.__init__(self, num_classes, embedding_dim, scale, subcenters)
        self._init_margin(margin, easy_margin)

    @torch.no_grad()
    def dominant_subcenter(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """For each sample, the index in ``[0, K)`` of its class's sub-center nearest to it (``long``)."""
        self._check(embeddings, labels)
        cos = self.subcenter_cosine(embeddings)
        own = cos.gather(1, labels.view(-1, 1, 1).expand(-1, 1, self.subcenters)).squeeze(1)
        return own.argmax(dim=1)
