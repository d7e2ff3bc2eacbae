"""Batch samplers built by name through ``SAMPLERS``: ``build("m_per_class", labels=..., ...)``.

Each sampler lives in the module of its name (``common.samplers.m_per_class``, ``.episodic``,
``.class_balanced``) and is imported on first use, so a run imports only the sampler its config names.
"""

from typing import Any

from common.samplers.base import SAMPLERS, EpochBatchSampler, SamplerError

__all__ = ["SAMPLERS", "EpochBatchSampler", "SamplerError", "build"]


def build(name: str, /, **hyperparams: Any) -> EpochBatchSampler:
    return SAMPLERS.build(name, **hyperparams)
