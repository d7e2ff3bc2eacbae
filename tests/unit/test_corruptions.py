"""The corrupted test sets: each corruption against a plain re-computation of its definition."""

from __future__ import annotations

import pytest
import torch

from common.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_matches_scipy_gaussian_filter(severity):
    ndimage = pytest.importorskip("scipy.ndimage")
    images = _images()
    sigma = CORRUPTIONS["gaussian_blur"][severity - 1]
    expected = torch.stack(
        [
            torch.from_numpy(
                ndimage.gaussian_filter(img.double().numpy() / 255.0, sigma, mode="nearest", truncate=4.0)
            )
            for img in images
        ]
    )
    got = corrupt(images, "gaussian_blur", severity)
    want = (expected.clamp(0, 1) * 255.0).to(torch.uint8)
    assert (got.int() - want.int()).abs().max() <= 1  # float rounding at a truncation boundary
    assert (got == want).float().mean() > 0.99


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_each_image_about_its_own_mean(severity):
    images = _images()
    c = CORRUPTIONS["contrast"][severity - 1]
    got = corrupt(images, "contrast", severity)
    for img, out in zip(images, got, strict=True):
        x = img.double() / 255.0
        m = x.mean()
        want = (((x - m) * c + m).clamp(0, 1) * 255.0).floor()
        assert (out.double() - want).abs().max() <= 1  # the mean's last bit can cross a level
        assert (out.double() == want).float().mean() > 0.99


def test_gaussian_noise_has_the_severitys_deviation_and_is_seeded():
    images = torch.full((200, 28, 28), 128, dtype=torch.uint8)  # mid-grey: no clipping
    for severity in SEVERITIES:
        c = CORRUPTIONS["gaussian_noise"][severity - 1]
        noisy = corrupt(images, "gaussian_noise", severity, seed=3)
        delta = (noisy.double() - 128.0) / 255.0
        assert abs(float(delta.std()) - c) < 0.05 * c
        assert abs(float(delta.mean()) + 0.5 / 255.0) < 0.002  # truncation lowers by half a level
    assert torch.equal(
        corrupt(images, "gaussian_noise", 2, seed=3), corrupt(images, "gaussian_noise", 2, seed=3)
    )
    assert not torch.equal(
        corrupt(images, "gaussian_noise", 2, seed=3), corrupt(images, "gaussian_noise", 2, seed=4)
    )


def test_severity_orders_the_damage():
    images = _images(20)
    for corruption in CORRUPTIONS:
        damage = [
            float((corrupt(images, corruption, s, seed=1).double() - images.double()).abs().mean())
            for s in SEVERITIES
        ]
        assert damage == sorted(damage), corruption


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fog", 1), "unknown corruption 'fog'"),
        (("contrast", 0), "severity must be one of"),
        (("contrast", 6), "severity must be one of"),
    ],
)
def test_bad_arguments_name_what_is_accepted(args, message):
    with pytest.raises(ValueError, match=message):
        corrupt(_images(), *args)
    with pytest.raises(ValueError, match="uint8 of shape"):
        corrupt(_images().float(), "contrast", 1)
