"""Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning", CVPR 2019.

General Pair Weighting: the gradient of any pair-based loss over a similarity matrix S is a weighting
w_ij of the pairs. The MS loss chooses the weights from three similarities:
self-similarity (S_ij itself), negative relative similarity (S_ij against the anchor's other negatives)
and positive relative similarity (against the hardest positive), in two steps:

1. mining: keep a negative pair if S_ik + epsilon > min_{y_j = y_i} S_ij, a positive pair if
   S_ij - epsilon < max_{y_k != y_i} S_ik;
2. weighting, through the loss
   L = 1/m sum_i [ 1/alpha log(1 + sum_{P_i} exp(-alpha (S_ij - lambda)))
                   + 1/beta  log(1 + sum_{N_i} exp( beta  (S_ik - lambda))) ].

Everything this paper needs lives in ``common/`` (``multi_similarity``, ``contrastive`` and ``triplet``
losses; the m-per-class sampler; the retrieval metrics). This package holds what is only the paper's:
``paper.yaml`` (metadata, headline numbers, claims) and its section of ``params.yaml``.
"""
