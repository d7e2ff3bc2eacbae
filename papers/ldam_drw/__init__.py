"""Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
NeurIPS 2019.

LDAM subtracts a class-dependent margin ``Delta_j = C / n_j^{1/4}`` from the target logit, so rare classes
get larger margins (``common.losses.ldam``); deferred re-weighting (DRW) trains with plain weights first and
switches to class-balanced weights late (``common.losses.classification.DeferredReweighting``). The paper
claims that each alone improves over the cross-entropy on long-tailed data and that LDAM-DRW is best. Here:
long-tailed Fashion-MNIST (exponential profile, imbalance 10 and 100), a balanced test set.
"""
