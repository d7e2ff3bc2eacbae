"""Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving Generalization",
ICLR 2021.

SAM minimises the worst loss in an L2 ball of radius rho around the weights, ``max_{||e|| <= rho} L(w + e)``.
Its first-order solution perturbs the weights along the normalised gradient, ``e = rho g / ||g||``, and
descends with the gradient taken at ``w + e``: two forward-backward passes per step
(``common.optim.sam``; the trainer takes both). The paper reports better test accuracy than the base
optimizer, robustness to label noise, and flatter minima; here the same conv net is trained with SGD and
with SAM around that SGD at equal epochs, on clean and symmetrically noisy labels, and the sharpness of the
final weights is measured (``common.metrics.sharpness``).
"""
