"""Small backbones for 28x28 grey images, each followed by a linear embedding head.

``conv4`` is the four-block network of Vinyals et al. (Matching Networks, 2016) and Snell et al.
(Prototypical Networks, 2017): [conv3x3(64) - BatchNorm - ReLU - maxpool2] x 4, which maps a
28x28 image to a 64-d feature. The embedding head is one linear layer to ``embedding_dim``;
losses that work on the hypersphere normalize its output themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from common.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm),
        nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class EmbeddingNet(nn.Module):
    """A backbone (images -> features) and a linear head (features -> embedding)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.embedding_dim = embedding_dim
        self.head = nn.Linear(feature_dim, embedding_dim) if embedding_dim else nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


@MODELS.register("conv4")
def conv4(
    embedding_dim: int = 64,
    hidden_channels: int = 64,
    in_channels: int = 1,
    blocks: int = 4,
    batch_norm: bool = True,
) -> EmbeddingNet:
    """Four conv blocks (Vinyals et al. 2016; Snell et al. 2017) + linear head; 28x28 input -> 1x1 map.

    BatchNorm normalizes over each process's own batch (no SyncBatchNorm, which has no CPU kernel), so N
    processes differ from one process with the N-fold batch; ``batch_norm=False`` (a biased conv instead)
    makes them train alike.
    """
    if embedding_dim < 0:
        raise ValueError(f"embedding_dim must be >= 0 (0 = no head), got {embedding_dim}")
    if hidden_channels < 1 or in_channels < 1 or blocks < 1:
        raise ValueError("hidden_channels, in_channels and blocks must be >= 1")
    layers = [_conv_block(in_channels, hidden_channels, batch_norm)]
    layers += [_conv_block(hidden_channels, hidden_channels, batch_norm) for _ in range(blocks - 1)]
    backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return EmbeddingNet(backbone, hidden_channels, embedding_dim)


def build(name: str, /, **hyperparams) -> nn.Module:
    return MODELS.build(name, **hyperparams)
