"""Supervised contrastive loss: Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan,
"Supervised Contrastive Learning", NeurIPS 2020, in its ``L_out`` and ``L_in`` variants.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, masked_logsumexp, masked_mean

SUPCON_VARIANTS = ("outside", "inside")


@LOSSES.register("supcon")
class SupConLoss(EmbeddingLoss):
    r"""Supervised contrastive loss: Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan,
    "Supervised Contrastive Learning", NeurIPS 2020 (arXiv:2004.11362). With ``a_ij = S_ij / tau``:

    * ``variant="outside"``, Eq. (2), ``L_out``, the paper's recommended loss (Sec. 3.2, it trains better
      than ``L_in``)::

          L_i = -(tau / base_temperature) * 1/|P_i| sum_{p in P_i} log( exp(a_ip) / sum_{k in A_i} exp(a_ik) )

    * ``variant="inside"``, Eq. (3), ``L_in`` (the mean over positives inside the log)::

          L_i = -(tau / base_temperature) * log( 1/|P_i| sum_{p in P_i} exp(a_ip) / sum_{k in A_i} exp(a_ik) )

    ``A_i`` is every reference but ``i`` itself (the positives included). Reduction: the mean of ``L_i`` over
    the queries with at least one positive; zero (live graph) when no query has one.

    Defaults: ``temperature = 0.1``, the temperature of the paper's experiments.
    ``base_temperature`` reproduces the ``temperature / base_temperature`` factor of the official code
    (github.com/HobbitLong/SupContrast ``losses.py``, read at commit 02f458c, where both default to 0.07);
    ``None`` (the default) means ``base_temperature = temperature``, i.e. no factor, Eq. (2)/(3) as printed.
    Pass ``temperature=0.1, base_temperature=0.07`` for the official code's scale of the loss (the factor
    rescales the gradients, hence interacts with the learning rate).

    Checked against the official code: it builds the same ``A_i`` (all but self), the same mean over
    positives of the log-probabilities for ``L_out``, and averages over all anchors; every anchor of its
    multi-view batches has a positive (its other views), so the mean over anchors with a positive is the same
    there (an anchor without positive makes the official code divide by zero).

    pytorch-metric-learning's ``SupConLoss(temperature)`` is ``variant="outside"`` without the factor, with
    the same value and gradients (tested, also with ``ref_emb``) whenever the batch holds at least two labels.
    It averages over the queries with a non-zero loss (anchors without positive give exactly 0 there, so they
    are left out as here), and it returns 0 for a batch that has no negative pair at all (a single label),
    where Eq. (2) is still defined and non-zero (``L_i >= log |P_i|``) and this implementation computes it.
    """

    def __init__(
        self, temperature: float = 0.1, variant: str = "outside", base_temperature: float | None = None
    ) -> None:
        super().__init__()
        self.temperature = check_real("temperature", temperature, 0.0, low_open=True)
        if variant not in SUPCON_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(SUPCON_VARIANTS)}; got {variant!r}")
        self.variant = variant
        if base_temperature is None:
            self.base_temperature = None
        else:
            self.base_temperature = check_real("base_temperature", base_temperature, 0.0, low_open=True)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        logits = sim / self.temperature
        has_pos = pos.any(dim=1)
        log_denominator = masked_logsumexp(logits, pos | neg)
        n_pos = pos.sum(dim=1)
        if self.variant == "outside":
            mean_pos_logit = torch.where(pos, logits, 0.0).sum(dim=1) / n_pos.clamp_min(1)
            losses = log_denominator - mean_pos_logit
        else:
            log_mean_pos = masked_logsumexp(logits, pos) - n_pos.clamp_min(1).to(logits.dtype).log()
            losses = log_denominator - log_mean_pos
        if self.base_temperature is not None:
            losses = losses * (self.temperature / self.base_temperature)
        return masked_mean(losses, has_pos)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, variant={self.variant!r}, "
            f"base_temperature={self.base_temperature}"
        )
