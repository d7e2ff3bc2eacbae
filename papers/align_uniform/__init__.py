"""Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", ICML 2020.

Self-supervised encoders (two random views of each image, instance labels) trained with NT-Xent at several
temperatures and with the direct alignment + uniformity loss (``common.losses.align_uniform``) at several
weights and view strengths; each is measured by alignment, uniformity, a linear probe and k-NN accuracy
(``eval.probe``). The report ranks the encoders: do the two metrics agree with downstream accuracy, and does
optimizing them directly do as well as the contrastive loss?
"""
