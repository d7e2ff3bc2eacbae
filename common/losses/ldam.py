"""Label-distribution-aware margin loss: Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019, with deferred re-weighting (DRW, its Algorithm 1)
through :class:`common.losses.classification.DeferredReweighting`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import check_real
from .classification import ClassificationLoss, DeferredReweighting, check_class_counts


@LOSSES.register("ldam")
class LDAMLoss(DeferredReweighting, ClassificationLoss):
    r"""Label-distribution-aware margin loss, Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets
    with Label-Distribution-Aware Margin Loss", NeurIPS 2019 (arXiv:1906.07413), Eq. (13)::

        L = -log( e^{s (z_y - Delta_y)} / (e^{s (z_y - Delta_y)} + sum_{j != y} e^{s z_j}) ),
        Delta_j = K / n_j^{1/4}

    with ``n_j`` the training samples of class ``j`` (``class_counts``, required) and ``K`` chosen so that the
    largest margin (the rarest class) is ``max_m``. Following the official code (github.com/kaidic/LDAM-DRW,
    ``losses.py`` ``LDAMLoss``: ``m_j = n_j^{-1/4} * max_m / max_k n_k^{-1/4}``, logits scaled by ``s``
    after the margin, ``F.cross_entropy`` with the per-class weights): defaults ``max_m = 0.5``, ``s = 30``
    (``cifar_train.py``). The official model feeds LDAM cosine logits (``NormedLinear``: normalised features
    and weights, ``use_norm=True`` for LDAM), so the logits given here should be cosines for ``s`` and
    ``max_m`` to mean what they do there.

    DRW (Algorithm 1) is the :class:`DeferredReweighting` mixin: ``drw_epoch`` (``None`` = off; the paper's
    CIFAR schedule is 160 of 200 epochs) and ``beta = 0.9999``. ``max_m = 0, s = 1`` is the cross-entropy
    (tested).
    """

    def __init__(
        self,
        class_counts: list[int],
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.max_m = check_real("max_m", max_m, 0.0)
        self.s = check_real("s", s, 0.0, low_open=True)
        margins = torch.tensor([n**-0.25 for n in counts], dtype=torch.float64)
        self.register_buffer("margins", margins * (self.max_m / float(margins.max())), persistent=False)
        self._init_class_weights(None, counts, drw_epoch, beta)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape[1] != len(self.margins):
            raise ValueError(f"logits have {logits.shape[1]} classes but class_counts {len(self.margins)}")
        target = targets.unsqueeze(1)
        delta = self.margins.to(logits.dtype)[targets].unsqueeze(1)
        shifted = logits.scatter(1, target, logits.gather(1, target) - delta)
        return F.cross_entropy(self.s * shifted, targets, weight=self.class_weights_for(logits))

    def test_logits(self, logits: Tensor) -> Tensor:
        """``s * z``: the probabilities the scaled softmax gives, without the training-time margin."""
        return self.s * logits

    def extra_repr(self) -> str:
        return (
            f"classes={len(self.margins)}, max_m={self.max_m}, s={self.s}, drw_epoch={self.drw_epoch}, "
            f"reweighting={self.reweighting}"
        )
