"""Common corruptions of test images at five severities, after Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR 2019 (CIFAR-10-C).

Three corruptions, with the parameters of their CIFAR-10-C script (github.com/hendrycks/robustness,
``ImageNet-C/create_c/make_cifar_c.py``), on pixels scaled to [0, 1], severity 1 (mildest) to 5:

* ``gaussian_noise``: ``x + N(0, c^2)`` per pixel, ``c`` = 0.04, 0.06, 0.08, 0.09, 0.10;
* ``gaussian_blur``: a Gaussian filter of standard deviation ``c`` = 0.4, 0.6, 0.7, 0.8, 1.0 pixels
  (as ``skimage.filters.gaussian``: kernel truncated at 4 standard deviations, edges extended);
* ``contrast``: ``(x - m) * c + m`` with ``m`` the image's mean, ``c`` = 0.75, 0.5, 0.4, 0.3, 0.15.

Each result is clipped to [0, 1] and stored as uint8 by truncation (the script's ``np.uint8``). The noise is
drawn from a private generator seeded by ``seed``, so a corrupted test set is the same on every run.
Fashion-MNIST images are 28 x 28 against CIFAR's 32 x 32; the pixel-level parameters are kept as they are.

This module imports only torch and the standard library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
}
SEVERITIES = (1, 2, 3, 4, 5)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = int(4.0 * sigma + 0.5)  # scipy.ndimage.gaussian_filter's, at skimage's truncate=4.0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter of (N, H, W) float64 images, edges extended (skimage's mode='nearest')."""
    kernel = _gaussian_kernel(sigma)
    radius = (len(kernel) - 1) // 2
    out = x.unsqueeze(1)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


def corrupt(images: torch.Tensor, corruption: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8, (N, H, W)) corrupted by ``corruption`` at ``severity`` (1-5), as uint8."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {sorted(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 of shape (N, H, W), got {images.dtype} {tuple(images.shape)}")
    c = CORRUPTIONS[corruption][severity - 1]
    x = images.double() / 255.0
    if corruption == "gaussian_noise":
        generator = torch.Generator().manual_seed(seed)
        x = x + c * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    elif corruption == "gaussian_blur":
        x = _blur(x, c)
    else:
        means = x.mean(dim=(1, 2), keepdim=True)
        x = (x - means) * c + means
    return (x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)  # truncation, as np.uint8
