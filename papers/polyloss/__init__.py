"""Leng, Tan, Liu, Cubuk, Shi, Cheng, Anguelov, "PolyLoss: A Polynomial Expansion Perspective of
Classification Loss Functions", ICLR 2022.

The cross-entropy is a series in ``(1 - p_t)``: ``-log p_t = sum_j (1 - p_t)^j / j``. PolyLoss adjusts its
coefficients; Poly-1 adds ``epsilon (1 - p_t)`` to the cross-entropy (``common.losses.poly1``). The paper
claims that the best epsilon depends on the task and that Poly-1 at a good epsilon beats both the
cross-entropy and the focal loss. Here each loss gets the same number of trials of its own hyper-parameter
(label smoothing, gamma, epsilon) on held-out training data, on balanced and on long-tailed Fashion-MNIST.
"""
