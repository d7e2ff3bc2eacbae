"""Batch samplers built by name through ``SAMPLERS``."""

from common.samplers.base import SAMPLERS, EpochBatchSampler, SamplerError
from common.samplers.class_balanced import ClassBalancedBatchSampler
from common.samplers.episodic import EpisodicBatchSampler, episode_targets, split_episode
from common.samplers.m_per_class import MPerClassBatchSampler

__all__ = [
    "SAMPLERS",
    "ClassBalancedBatchSampler",
    "EpisodicBatchSampler",
    "EpochBatchSampler",
    "MPerClassBatchSampler",
    "SamplerError",
    "build",
    "episode_targets",
    "split_episode",
]


def build(name: str, /, **hyperparams):
    return SAMPLERS.build(name, **hyperparams)
