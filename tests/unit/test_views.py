"""Random views for contrastive learning: the crop's box, the flip and the jitter, read back from images
whose pixels encode their own coordinates."""

from __future__ import annotations

import math

import pytest
import torch

from common.data import views
from common.data.views import random_view, two_views

H = W = 28


def _ramps(n: int) -> torch.Tensor:
    """Channel 0 holds each pixel's column, channel 1 its row: bilinear sampling of these is exact."""
    cols = torch.arange(W, dtype=torch.float64).expand(H, W)
    rows = torch.arange(H, dtype=torch.float64).unsqueeze(1).expand(H, W)
    return torch.stack([cols, rows]).expand(n, 2, H, W).clone()


def _box_side(positions: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the source positions sampled along one side (n, size): the box's side as a fraction of the
    image's, and its two edges in pixels. Sample j lies at ``edge + (j + 1/2) * side``; the outermost
    samples may fall in the border half-pixel, where sampling clamps, so they are not used."""
    step = positions[:, 2] - positions[:, 1]
    inner = positions[:, 1:-1]
    expected = positions[:, 1:2] + step[:, None] * torch.arange(size - 2, dtype=positions.dtype)
    assert torch.allclose(inner, expected, atol=1e-9), "evenly spaced samples: a resized box"
    first = positions[:, 1] - 1.5 * step  # the box's edge on the side of output column 0
    last = first + size * step
    return step.abs(), torch.minimum(first, last), torch.maximum(first, last)


@pytest.mark.parametrize("strength", [0.25, 0.5, 1.0])
def test_the_crop_is_a_box_of_the_allowed_area_and_shape_inside_the_image(strength, monkeypatch):
    monkeypatch.setattr(views, "JITTER_PROBABILITY", 0.0)
    out = random_view(_ramps(400), strength, torch.Generator().manual_seed(1))
    x, y = out[:, 0], out[:, 1]
    # a box: every row samples the same columns, every column the same rows
    assert torch.allclose(x, x[:, :1, :].expand_as(x), atol=1e-9)
    assert torch.allclose(y, y[:, :, :1].expand_as(y), atol=1e-9)
    width, left, right = _box_side(x[:, 0, :], W)
    height, top, bottom = _box_side(y[:, :, 0], H)
    area = width * height
    low = 1.0 - 0.8 * strength
    assert float(area.min()) >= low - 1e-9 and float(area.max()) <= 1.0 + 1e-9
    assert float(area.min()) < low + 0.1 * (1 - low), "the whole range of areas is drawn"
    ratio = width / height
    assert float(ratio.min()) >= 3 / 4 - 1e-9 and float(ratio.max()) <= 4 / 3 + 1e-9
    # inside the image, whose pixels span [-0.5, W - 0.5]
    assert float(left.min()) >= -0.5 - 1e-9 and float(right.max()) <= W - 0.5 + 1e-9
    assert float(top.min()) >= -0.5 - 1e-9 and float(bottom.max()) <= H - 0.5 + 1e-9
    flipped = (x[:, 0, -2] < x[:, 0, 1]).double().mean()
    assert 0.4 < float(flipped) < 0.6
    assert not bool((y[:, -2, 0] < y[:, 1, 0]).any()), "no vertical flip"


def test_strength_zero_returns_each_image_or_its_mirror_image():
    images = torch.randn(50, 1, H, W, generator=torch.Generator().manual_seed(2))
    out = random_view(images, 0.0, torch.Generator().manual_seed(3))
    for image, view in zip(images, out, strict=True):
        same = torch.allclose(view, image, atol=1e-5)
        mirrored = torch.allclose(view, image.flip(-1), atol=1e-5)
        assert same != mirrored


def test_the_jitter_scales_about_black_then_about_the_mean_on_80_percent_of_the_images(monkeypatch):
    g = torch.Generator().manual_seed(4)
    images = torch.rand(1000, 1, H, W, generator=g, dtype=torch.float64) * 3 - 1  # black is about -1
    jittered = random_view(images, 1.0, torch.Generator().manual_seed(5))
    monkeypatch.setattr(views, "JITTER_PROBABILITY", 0.0)
    plain = random_view(images, 1.0, torch.Generator().manual_seed(5))  # the same draws, no jitter
    black = images.amin()
    scales = []
    for p, j in zip(plain, jittered, strict=True):
        # j = ((p - black) * b + black - m) * c + m with m the mean of the brightened image: affine in p
        slope = float(((j - j.mean()) * (p - p.mean())).sum() / ((p - p.mean()) ** 2).sum())
        assert torch.allclose(j, slope * (p - p.mean()) + j.mean(), atol=1e-9)
        # the mean moves only by the brightness step: scaling about black
        brightness = float((j.mean() - black) / (p.mean() - black))
        assert 0.6 - 1e-9 <= brightness <= 1.4 + 1e-9
        assert 0.6 - 1e-9 <= slope / brightness <= 1.4 + 1e-9
        scales.append(abs(slope - 1.0) > 1e-12)
    assert 0.76 < sum(scales) / len(scales) < 0.84


def test_two_views_differ_and_a_generator_makes_them_reproducible():
    images = torch.randn(8, 1, H, W, generator=torch.Generator().manual_seed(6))
    a1, b1 = two_views(images, 1.0, torch.Generator().manual_seed(7))
    a2, b2 = two_views(images, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.allclose(a1, b1)
    assert a1.shape == images.shape and a1.dtype == images.dtype


@pytest.mark.parametrize("strength", [-0.1, 1.5, math.nan])
def test_a_bad_strength_is_refused(strength):
    with pytest.raises(ValueError, match="strength must be in"):
        random_view(torch.zeros(2, 1, H, W), strength)
    with pytest.raises(ValueError, match="float"):
        random_view(torch.zeros(2, H, W), 0.5)
