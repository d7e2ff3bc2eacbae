"""Hui, Belkin, Wright, "Cut your Losses with Squentropy", ICML 2023.

Squentropy is the cross-entropy plus the mean square of the non-target logits (``common.losses.squentropy``).
The paper claims it beats both the cross-entropy and the rescaled square loss of Hui & Belkin (2021,
``common.losses.square``) in accuracy, is better calibrated, varies less across random initializations, and
trains with the cross-entropy's own optimizer settings. Here all three losses share the cross-entropy's
optimizer and learning rate, with 8 initializations each.
"""
