"""Margin/proxy heads: normalised softmax (NormFace), CosFace, ArcFace, sub-center ArcFace.

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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import LOSSES
from .base import check_inputs, check_real
from .classification import check_int


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


@LOSSES.register("normface")
class NormFaceHead(MarginHead):
    r"""Normalised softmax: Wang, Xiang, Cheng, Yuille, "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM MM 2017 (arXiv:1704.06369), Sec. 3: the softmax loss on the cosine of L2-normalised
    features and weights, multiplied by a scale ``s`` (without it the loss cannot get small: the paper's
    Proposition 2 bounds it from below for a given ``s``)::

        L = -1/m sum_i log( e^{s cos(theta_{y_i})} / sum_j e^{s cos(theta_j)} )

    No margin (``psi`` is the identity). The paper learns ``s`` (the official
    ``prototxt/scaled_cosine_softmax.prototxt``, github.com/happynear/NormFace: a ``Scale`` layer initialised
    at 10); here ``s`` is fixed, default
    ``scale = 20``: pytorch-metric-learning's ``NormalizedSoftmaxLoss`` (``temperature = 0.05 = 1/20``), the
    setting of Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019. Equal to
    PML's ``NormalizedSoftmaxLoss(temperature=1/scale)`` with the same weights (tested).
    """

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 20.0) -> None:
        super().__init__(num_classes, embedding_dim, scale)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        return target_cos


@LOSSES.register("cosface")
class CosFaceHead(MarginHead):
    r"""Large margin cosine loss: Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, "CosFace: Large Margin Cosine
    Loss for Deep Face Recognition", CVPR 2018 (arXiv:1801.09414), Eq. (4)::

        L = 1/N sum_i -log( e^{s (cos(theta_{y_i}) - m)}
                            / (e^{s (cos(theta_{y_i}) - m)} + sum_{j != y_i} e^{s cos(theta_j)}) )

    Defaults ``s = 64``, ``m = 0.35``: the paper's setting (Sec. 4, implementation details); also the
    insightface ``cosface`` config (``loss_m3 = 0.35``, ``loss_s = 64``). ``m`` lies in ``[0, 2]`` (a cosine
    margin). Equal to pytorch-metric-learning's ``CosFaceLoss`` with the same weights (tested).
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 64.0, margin: float = 0.35
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        self.margin = check_real("margin", margin, 0.0, 2.0)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        return target_cos - self.margin

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


@LOSSES.register("arcface")
class ArcFaceHead(MarginHead):
    r"""Additive angular margin loss: Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for
    Deep Face Recognition", CVPR 2019 (arXiv:1801.07698), Eq. (3)::

        L = -1/N sum_i log( e^{s cos(theta_{y_i} + m)}
                            / (e^{s cos(theta_{y_i} + m)} + sum_{j != y_i} e^{s cos(theta_j)}) )

    Defaults ``s = 64``, ``m = 0.5`` (the paper's setting, Sec. 4.1, implementation details).
    ``cos(theta + m)`` is computed as ``cos(theta) cos(m) - sin(theta) sin(m)`` with ``sin(theta) =
    sqrt(1 - cos^2)`` (its gradient set to zero where ``cos = +-1`` exactly, instead of an infinite one).

    ``theta + m > pi``: there ``cos(theta + m)`` would increase with ``theta``, rewarding a worse angle. The
    official code replaces the target logit, for ``cos(theta) <= cos(pi - m)`` (i.e. ``theta >= pi - m``), by
    ``cos(theta) - m sin(m)``, which keeps decreasing in ``theta`` (with a downward jump of
    ``cos(m) + m sin(m) - 1``, 0.117 for ``m = 0.5``, at ``theta = pi - m``); with ``easy_margin=True`` the
    margin applies only where ``cos(theta) > 0`` and the target logit is left as it is elsewhere. Both follow
    the insightface code of the paper's time, ``src/train_softmax.py`` (``loss_type == 4``: ``threshold =
    cos(pi - m)``, ``mm = sin(pi - m) * m``, ``--easy-margin`` default 0, and ``assert m < pi/2``, the range
    accepted here), kept in ``recognition/arcface_torch/losses.py`` until 2022 (commits
    2e2e8c97..5ef98047); the current ``arcface_torch`` computes ``cos(arccos(cos) + m)`` under ``no_grad``
    with no threshold, a different (straight-through) gradient, not followed here.

    pytorch-metric-learning's ``ArcFaceLoss`` (margin in degrees: pass ``degrees(m)``; its default 28.6 deg is
    0.49916 rad, not 0.5) applies the same replacement with the condition ``theta <= pi - m`` evaluated on
    ``acos(clamp(cos))``: values and gradients agree (tested, also deep in the ``theta + m > pi`` regime); the
    only difference is the single point ``theta = pi - m`` exactly, where PML takes ``cos(theta + m) = -1``
    and the official code (and this class) ``cos(theta) - m sin(m)``. PML has no ``easy_margin``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        self._init_margin(margin, easy_margin)

    def _init_margin(self, margin: float, easy_margin: bool) -> None:
        self.margin = check_real("margin", margin, 0.0, math.pi / 2, high_open=True)
        if not isinstance(easy_margin, bool):
            raise ValueError(f"easy_margin must be True or False, got {easy_margin!r}")
        self.easy_margin = easy_margin
        self._cos_m, self._sin_m = math.cos(self.margin), math.sin(self.margin)
        self._threshold = math.cos(math.pi - self.margin)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        sin_sq = 1.0 - target_cos * target_cos
        inside = sin_sq > 0
        sin = torch.where(inside, torch.where(inside, sin_sq, 1.0).sqrt(), 0.0)
        cos_plus_m = target_cos * self._cos_m - sin * self._sin_m
        if self.easy_margin:
            return torch.where(target_cos > 0, cos_plus_m, target_cos)
        return torch.where(target_cos > self._threshold, cos_plus_m, target_cos - self.margin * self._sin_m)

    def extra_repr(self) -> str:
        easy = ", easy_margin=True" if self.easy_margin else ""
        return f"{super().extra_repr()}, margin={self.margin}{easy}"


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
