"""Batch samplers built by name through ``SAMPLERS``."""

from common.samplers.m_per_class import SAMPLERS, MPerClassBatchSampler, SamplerError

__all__ = ["SAMPLERS", "MPerClassBatchSampler", "SamplerError", "build"]


def build(name: str, /, **hyperparams):
    return SAMPLERS.build(name, **hyperparams)
