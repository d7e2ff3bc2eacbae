"""Snell, Swersky, Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017.

A prototypical network embeds a few labelled examples of each new class, takes the mean of each class's
embeddings as its prototype, and classifies a query by a softmax over its negative distances to the
prototypes. Trained episode by episode (N classes, K support and Q query images each), it learns a metric
space for classes it has never seen. The paper's design choices: squared Euclidean distance rather than
cosine, and more classes per training episode than per test episode.

Everything this paper needs lives in ``common/``: the ``prototypical`` loss, the ``episodic`` sampler,
the few-shot evaluation (N-way K-shot episodes, Omniglot's 20 one-shot runs) and the tuning trials. This
package holds ``paper.yaml`` (metadata, claims, the paper's Omniglot table) and ``report.py`` (the one-shot
runs beside the published errors, accuracy against shots).
"""
