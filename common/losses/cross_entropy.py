"""Cross-entropy with label smoothing (Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016) and per-class weights, class-balanced (Cui et al., CVPR
2019) and deferred (DRW, Cao et al., NeurIPS 2019) through
:class:`common.losses.classification.DeferredReweighting`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import check_real
from .classification import ClassificationLoss, DeferredReweighting, check_class_counts


@LOSSES.register("cross_entropy")
class CrossEntropyLoss(DeferredReweighting, ClassificationLoss):
    r"""Cross-entropy, ``-log p_t``, with optional label smoothing and per-class weights.

    Label smoothing: Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception Architecture for
    Computer Vision", CVPR 2016, Sec. 7: the target is ``(1 - eps) onehot(y) + eps / C``, so the loss is
    ``(1 - eps) (-log p_y) + eps / C sum_j (-log p_j)``. Computed by ``torch.nn.functional.cross_entropy``
    (tested against a loop), with its semantics when weights and smoothing are combined.

    Per-class weights (:class:`DeferredReweighting`): ``class_weights`` (explicit, always on), or
    ``class_counts`` with ``drw_epoch`` for class-balanced weights (Cui et al. 2019) after ``drw_epoch``
    epochs:
    ``drw_epoch=0`` is the CE-RW baseline, ``drw_epoch=160`` the CE-DRW baseline of Cao et al., NeurIPS 2019
    (200 CIFAR epochs). ``class_counts`` alone does nothing (the engine always passes the training counts). Defaults: no smoothing, no
    weights (plain cross-entropy), ``beta = 0.9999`` (the official LDAM-DRW code).
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        class_counts: list[int] | None = None,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        self.label_smoothing = check_real("label_smoothing", label_smoothing, 0.0, 1.0)
        if class_counts is not None:
            check_class_counts(class_counts)
        self._init_class_weights(class_weights, class_counts, drw_epoch, beta)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(
            logits, targets, weight=self.class_weights_for(logits), label_smoothing=self.label_smoothing
        )

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, drw_epoch={self.drw_epoch}, "
            f"reweighting={self.reweighting}"
        )
