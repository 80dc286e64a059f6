"""MNIST-C-style corruptions: seeded, in range, monotone in severity, and each batched family equal to its
per-image definition."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from empirics.data.corruptions import CORRUPTIONS, SEVERITIES, _translate_per_image, corrupt
from infra.errors import BadInput

DETERMINISTIC = {"scale", "brightness", "stripe"}  # families without randomness
GEOMETRIC = {"shear", "scale", "rotate", "translate"}


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_there_are_at_least_ten_families_with_five_severities():
    """MNIST-C has 15 families; the issue asks for at least 8, the brief for 10."""
    assert len(CORRUPTIONS) >= 10 and SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_same_seed_gives_the_same_images_and_another_seed_other_images(family, digit_images):
    """corrupt(x, family, s, Generator(seed)) is a function of the seed."""
    first = corrupt(digit_images, family, 3, seeded(7))
    torch.testing.assert_close(corrupt(digit_images, family, 3, seeded(7)), first, rtol=0, atol=0)
    if family not in DETERMINISTIC:
        assert not torch.equal(corrupt(digit_images, family, 3, seeded(8)), first)


# Families whose own output leaves [0, 1] (Poisson counts / λ; strokes added on top of ink): corrupt() clips them.
CLIPPED = {"shot_noise", "zigzag"}


def assert_unit_range_before_the_clip(family: str, images: torch.Tensor) -> None:
    """``corrupt`` clips to [0, 1] last, so a range check on its output cannot fail; check the family's own output
    instead: in [0, 1] by itself for every family but ``CLIPPED``, and for those out of range at some severity (so
    the clip is needed) with ``corrupt`` equal to the clipped output."""
    raw = [CORRUPTIONS[family](images, severity, seeded()) for severity in SEVERITIES]
    if family in CLIPPED:
        assert max(out.max().item() for out in raw) > 1
    else:
        assert all(out.min() >= 0 and out.max() <= 1 for out in raw)
    for severity, out in zip(SEVERITIES, raw):
        torch.testing.assert_close(corrupt(images, family, severity, seeded()), out.clamp(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_every_family_changes_images_and_stays_in_unit_range(family, digit_images):
    """At every severity the output differs from the clean image (mean |Δ| > 0.005, i.e. over a grey level on
    average) and has the input's shape and dtype; the family maps [0, 1] into [0, 1] by itself, or is clipped."""
    for severity in SEVERITIES:
        out = corrupt(digit_images, family, severity, seeded())
        assert out.shape == digit_images.shape and out.dtype == digit_images.dtype
        assert (out - digit_images).abs().mean() > 0.005
    assert_unit_range_before_the_clip(family, digit_images)


def stroke_scale(images: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with σ = 2 px (about a stroke's width)."""
    return TF.gaussian_blur(images, kernel_size=[13, 13], sigma=[2.0, 2.0])


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_distance_from_clean_grows_with_severity_on_average(family, digit_images):
    """mean_n |corrupt(x_n, s) − x_n|₂ is strictly increasing in s = 1..5 (48 digit-like images, one seed).

    For the geometric families the distance is taken between stroke-scale blurred images: the raw L2 distance
    saturates at sqrt(|x|² + |x'|²) once moved strokes stop overlapping, however far they move (and a shrunken digit
    has less ink), so it cannot rank large displacements; blurring first keeps overlap, and hence order, longer."""
    view = stroke_scale if family in GEOMETRIC else (lambda images: images)
    distances = [(view(corrupt(digit_images, family, s, seeded())) - view(digit_images)).flatten(1).norm(dim=1)
                 .mean().item() for s in SEVERITIES]
    assert all(low < high for low, high in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_colour_images_of_another_size_work(family, generator):
    """CIFAR-sized RGB images (3 × 32 × 32) keep their shape and stay within [0, 1] (before the clip, or clipped)."""
    images = torch.rand(6, 3, 32, 32, generator=generator)
    out = corrupt(images, family, 5, seeded())
    assert out.shape == images.shape
    assert_unit_range_before_the_clip(family, images)


def test_rotate_equals_torchvision_rotation_by_plus_or_minus_the_angle_per_image(digit_images):
    """Batched rotate = per image TF.rotate by ±0.6 rad (severity 3), bilinear; the sign is the image's own."""
    out = corrupt(digit_images, "rotate", 3, seeded())
    degrees = math.degrees(0.6)
    signs_seen = set()
    for image, result in zip(digit_images, out):
        errors = {sign: (TF.rotate(image, sign * degrees, interpolation=InterpolationMode.BILINEAR).clamp(0, 1)
                         - result).abs().max().item() for sign in (1, -1)}
        sign = min(errors, key=errors.get)
        assert errors[sign] < 1e-5  # float32 resampling of the same grid: identical up to rounding
        signs_seen.add(sign)
    assert signs_seen == {1, -1}


def test_translate_shifts_each_image_by_whole_pixels(digit_images):
    """Severity 2 moves every image by (±2, ±2) pixels: the result equals one of the four exact shifts."""
    out = corrupt(digit_images, "translate", 2, seeded())
    padded = torch.nn.functional.pad(digit_images, (2, 2, 2, 2))
    shifts = [padded[..., 2 - dy:30 - dy, 2 - dx:30 - dx] for dx in (-2, 2) for dy in (-2, 2)]
    for n in range(len(digit_images)):
        # bilinear sampling at integer offsets reproduces pixels up to float32 rounding
        assert min((shift[n] - out[n]).abs().max().item() for shift in shifts) < 1e-5


def test_sub_pixel_translation_helper_is_exact_at_integer_offsets(digit_images):
    """_translate_per_image(x, dx, dy)(u, v) = x(u − dx, v − dy), zeros outside, for integer dx, dy per image."""
    dx = torch.tensor([1.0, -3.0, 0.0])
    dy = torch.tensor([2.0, 0.0, -1.0])
    out = _translate_per_image(digit_images[:3], dx, dy)
    for n in range(3):
        expected = torch.roll(digit_images[n], shifts=(int(dy[n]), int(dx[n])), dims=(-2, -1))
        rows, cols = int(dy[n]), int(dx[n])
        if rows > 0:
            expected[..., :rows, :] = 0
        elif rows < 0:
            expected[..., rows:, :] = 0
        if cols > 0:
            expected[..., :, :cols] = 0
        elif cols < 0:
            expected[..., :, cols:] = 0
        torch.testing.assert_close(out[n], expected, rtol=0, atol=1e-5)  # float32 interpolation weights 0 or 1


def test_brightness_adds_c_to_grey_images_and_keeps_colour_ratios(generator):
    """One channel: min(1, x + .3) at severity 3. RGB: HSV value + .3 keeps the channel ratios (hue, saturation)
    wherever the new value stays below 1."""
    grey = torch.rand(4, 1, 8, 8, generator=generator)
    torch.testing.assert_close(corrupt(grey, "brightness", 3, seeded()), (grey + 0.3).clamp(max=1), rtol=0, atol=1e-7)
    rgb = torch.rand(4, 3, 8, 8, generator=generator) * 0.5 + 0.1
    out = corrupt(rgb, "brightness", 3, seeded())
    value = rgb.amax(1, keepdim=True)
    torch.testing.assert_close(out.amax(1, keepdim=True), value + 0.3, rtol=0, atol=1e-6)
    torch.testing.assert_close(out / out.amax(1, keepdim=True), rgb / value, rtol=0, atol=1e-6)


def test_stripe_inverts_exactly_the_outer_columns(digit_images):
    """Severity 4 inverts round(.25 · 28) = 7 columns on each side (MNIST-C's stripe) and nothing else."""
    out = corrupt(digit_images, "stripe", 4, seeded())
    torch.testing.assert_close(out[..., :7], 1 - digit_images[..., :7], rtol=0, atol=0)
    torch.testing.assert_close(out[..., 21:], 1 - digit_images[..., 21:], rtol=0, atol=0)
    torch.testing.assert_close(out[..., 7:21], digit_images[..., 7:21], rtol=0, atol=0)


def test_shot_noise_is_unbiased(generator):
    """E[Poisson(λx)/λ] = x: over 4000 draws at λ = 3 the mean is within 4 standard errors, 4·sqrt(x/λ/4000)."""
    x = torch.full((4000, 1, 1, 1), 0.4)
    mean = corrupt(x, "shot_noise", 5, seeded()).mean().item()
    assert abs(mean - 0.4) < 4 * math.sqrt(0.4 / 3 / 4000)


@pytest.mark.parametrize("family, severity, match", [
    ("snow", 3, "family='snow' is not known"),
    ("fog", 0, "severity=0 is out of range"),
    ("fog", 6, "severity=6 is out of range"),
    ("fog", 2.5, "severity=2.5 is not valid"),
])
def test_bad_family_or_severity_is_rejected(family, severity, match, digit_images):
    """Unknown families and severities outside 1..5 raise BadInput naming the value and the accepted range."""
    with pytest.raises(BadInput, match=match):
        corrupt(digit_images, family, severity, seeded())


def test_normalised_images_are_rejected(digit_images):
    """Corruptions act on pixels in [0, 1]; normalised images (negative values) raise BadInput."""
    with pytest.raises(BadInput, match="expected pixels in \\[0, 1\\]"):
        corrupt((digit_images - 0.13) / 0.31, "fog", 1, seeded())
