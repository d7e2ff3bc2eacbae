"""Random views of a batch of images for contrastive learning (SimCLR, SupCon, Wang & Isola), batched in torch.

One view of an image is, in this order (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, Appendix A; the CIFAR recipe of Khosla et al.'s SupCon code, for greyscale):

1. a random resized crop: a box of ``scale`` in ``[1 - 0.8 * strength, 1]`` of the image's area (uniform)
   and an aspect ratio log-uniform among those in ``[3/4, 4/3]`` at which a box of that area fits the image
   (torchvision's ``RandomResizedCrop`` draws both and retries until it fits; here the ratio is drawn only
   where it fits, so the area is always the one drawn), placed uniformly inside the image and resized back
   to the image's size (bilinear); at ``strength = 1`` the area range is SupCon's ``(0.2, 1)``;
2. a horizontal flip with probability 1/2;
3. with probability 0.8, brightness and contrast jitter: the image is scaled about black by a factor in
   ``[1 - 0.4 * strength, 1 + 0.4 * strength]`` (brightness), then about its own mean by another
   (contrast), SimCLR's ``ColorJitter(0.4 s, 0.4 s, ...)`` without the colour terms.

``strength = 0`` gives the image unchanged except for the flip. The images are the model's standardized
inputs, (N, C, H, W): "black" is the batch's smallest value (Fashion-MNIST's background), and scaling about
it is scaling the raw pixels about 0. Randomness comes from ``generator`` (or torch's global RNG, which the
trainer seeds and checkpoints).

This module imports only torch and the standard library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_view", "two_views", "view_batch"]

MIN_AREA_AT_FULL_STRENGTH = 0.2
JITTER_AT_FULL_STRENGTH = 0.4
JITTER_PROBABILITY = 0.8


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def random_view(
    images: torch.Tensor, strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One random view of each image of ``images`` (N, C, H, W), same shape and dtype."""
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]
    black = images.amin() if n else images.new_zeros(())
    # 1. crop: box of width w and height h (fractions of the side), its centre (cx, cy) in [-1, 1] coordinates
    area = _uniform(n, 1.0 - (1.0 - MIN_AREA_AT_FULL_STRENGTH) * strength, 1.0, generator)
    # the ratios whose box of this area fits the image: [area, 1 / area], within [3/4, 4/3]
    low = torch.clamp(torch.log(area), min=math.log(3 / 4))
    high = torch.clamp(-torch.log(area), max=math.log(4 / 3))
    ratio = torch.exp(low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64))
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - w) * _uniform(n, -1.0, 1.0, generator)
    cy = (1.0 - h) * _uniform(n, -1.0, 1.0, generator)
    # 2. flip: a negative horizontal scale
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(
        images, grid.to(images.device), mode="bilinear", padding_mode="border", align_corners=False
    )
    # 3. brightness about black, then contrast about the image's mean, on 80% of the images
    spread = JITTER_AT_FULL_STRENGTH * strength
    jitter = torch.rand(n, generator=generator) < JITTER_PROBABILITY
    brightness = torch.where(jitter, _uniform(n, 1.0 - spread, 1.0 + spread, generator), 1.0)
    contrast = torch.where(jitter, _uniform(n, 1.0 - spread, 1.0 + spread, generator), 1.0)
    shape = (n, *([1] * (images.ndim - 1)))
    brightness = brightness.to(images.dtype).view(shape).to(images.device)
    contrast = contrast.to(images.dtype).view(shape).to(images.device)
    out = (out - black) * brightness + black
    means = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - means) * contrast + means


def two_views(
    images: torch.Tensor, strength: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of each image: the positive pairs of a contrastive loss."""
    return random_view(images, strength, generator), random_view(images, strength, generator)


def view_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    count: int,
    strength: float,
    instance: bool,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of ``count`` random views of each image: the views stacked view by view
    (``count * N`` rows), and their labels, the images' ``labels`` or, with ``instance``, their ``indices`` in
    the training split (so the views of one image, and only those, share a label)."""
    ids = indices.to(labels.device) if instance else labels
    return (
        torch.cat([random_view(images, strength, generator) for _ in range(count)]),
        torch.cat([ids] * count),
    )
