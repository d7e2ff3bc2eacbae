"""Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.

SupCon (``common.losses.supcon``, both ways of averaging over the positives) pre-trains the encoder on two
random views of each image (``views`` in params); a linear probe on its frozen features gives its top-1
(``eval.probe``). The cross-entropy trains end to end on one view of each image at the same strength and
budget. Both are scored on corrupted test images (``eval.corruptions``), and over a 2 x 2 grid of learning
rate and view strength for the stability claim.
"""
