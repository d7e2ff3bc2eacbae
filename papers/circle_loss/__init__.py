"""Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020.

Most losses push the between-class similarity s_n below the within-class similarity s_p by optimizing
(s_n - s_p), with the same penalty on every score. Circle loss re-weights each score by its distance from
its optimum (a_p = [1 + m - s_p]_+, a_n = [s_n + m]_+), which turns the decision boundary into a circle
and gives one definite target (s_p -> 1 - m, s_n -> m). The same formula covers pair-wise labels (a pair
loss in a batch) and class-level labels (the class weights as partners).

Everything this paper needs lives in ``common/``: ``circle`` and ``triplet`` (pair-wise labels),
``circle_class``, ``cosface`` (AM-Softmax) and ``normface`` (normalized softmax) heads (class-level
labels), the m-per-class sampler, the retrieval metrics and the s_p / s_n statistics of the evaluation.
This package holds ``paper.yaml`` (metadata, claims) and its section of ``params.yaml``.
"""
