"""MNIST-C-style corruptions (Mu & Gilmer 2019), seeded and batched in torch, with severities 1..5.

Every corruption maps images ``(N, C, H, W)`` with pixels in [0, 1] (before normalisation) to images of the same
shape in [0, 1]; randomness comes only from the ``torch.Generator`` passed in, so the same seed gives the same
images. Geometry and blur use ``torchvision.transforms.v2.functional`` (``affine``, ``gaussian_blur``); what
torchvision lacks (stripes, zigzags, fog, local pixel shuffling, per-image motion directions) is written here.
Pixel distances are given for 28-pixel images and scale with the width (``W / 28``).

| family | severity 1 .. 5 | randomness per image | MNIST-C's single level |
|---|---|---|---|
| shot_noise | Poisson(λx)/λ, λ = 60, 25, 12, 5, 3 | per pixel | λ = 3 |
| impulse_noise | salt-and-pepper on a fraction .03, .06, .09, .17, .27 of values | per pixel | .17 |
| glass_blur | blur σ, shuffle radius δ, rounds n: (.4,1,1) (.5,1,2) (.7,1,2) (.8,2,2) (1,2,3) | per pixel | (.7,1,2) |
| motion_blur | one-sided Gaussian streak, σ = 1, 1.5, 2, 2.5, 3 px | angle ~ U(−45°, 45°) | σ = 3 |
| shear | horizontal shear angle .2, .4, .6, .8, 1 rad | sign | .4 |
| scale | zoom out by .9, .8, .7, .6, .5 about the centre | none | .7 |
| rotate | rotation .2, .4, .6, .8, 1 rad about the centre | sign | .4 |
| translate | shift by 1, 2, 3, 4, 5 px in x and in y | both signs | 3 |
| brightness | HSV value + .1, .2, .3, .4, .5 | none | .5 |
| stripe | invert the outer .10, .15, .20, .25, .30 of the columns on each side | none | .25 |
| fog | x + c·fractal noise, rescaled; (c, decay) (1.5,2) (2,2) (2.5,1.7) (2.75,1.5) (3,1.4) | fog field | (3,1.4) |
| zigzag | (lines, amplitude px) (1,1.5) (1,2.5) (2,2) (2,3) (3,3), MNIST-C's line profile | position, tilt | (1,2) |
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from infra.errors import BadInput, require, require_int_in_range

SEVERITIES = (1, 2, 3, 4, 5)
BILINEAR = InterpolationMode.BILINEAR


def _pixel_scale(images: torch.Tensor) -> float:
    return images.shape[-1] / 28.0


def _random_signs(count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (count,), generator=generator) * 2 - 1


def _per_group(images: torch.Tensor, keys: torch.Tensor, transform: Callable[[torch.Tensor, tuple], torch.Tensor]):
    """Apply ``transform(images[rows], key)`` once per distinct key (a row of ``keys``), reassembling the batch."""
    out = torch.empty_like(images)
    keys = keys.reshape(len(keys), -1)
    for key in torch.unique(keys, dim=0):
        rows = (keys == key).all(dim=1)
        out[rows] = transform(images[rows], tuple(key.tolist()))
    return out


def _affine(images: torch.Tensor, angle: float = 0.0, translate=(0, 0), scale: float = 1.0, shear: float = 0.0):
    """torchvision's affine map about the image centre, bilinear, zeros outside (angles in degrees)."""
    return TF.affine(images, angle=angle, translate=list(translate), scale=scale, shear=[shear, 0.0],
                     interpolation=BILINEAR)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    return TF.gaussian_blur(images, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])


def _translate_per_image(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """out(u, v) = in(u − dx, v − dy) per image (sub-pixel, bilinear, zeros outside) via ``affine_grid``."""
    n, _, h, w = images.shape
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * dx.to(images) / w  # normalised coordinates span 2 over w pixels
    theta[:, 1, 2] = -2.0 * dy.to(images) / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------- noise

def shot_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Poisson noise: Poisson(λ x) / λ."""
    rate = (60.0, 25.0, 12.0, 5.0, 3.0)[severity - 1]
    return torch.poisson(images * rate, generator=generator) / rate


def impulse_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper: a fraction ``amount`` of values set to 0 or 1 with equal odds (as skimage's 's&p')."""
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    hit = torch.rand(images.shape, generator=generator) < amount
    salt = torch.rand(images.shape, generator=generator) < 0.5
    return torch.where(hit.to(images.device), salt.to(images), images)


# ---------------------------------------------------------------- blur

def _local_shuffle(images: torch.Tensor, radius: int, generator: torch.Generator) -> torch.Tensor:
    """Each pixel, with probability 1/2, takes the value of a uniformly drawn neighbour within ``radius`` (clamped
    at the border): a batched stand-in for MNIST-C's sequential pixel swaps."""
    n, c, h, w = images.shape
    offsets = torch.randint(-radius, radius + 1, (2, n, h, w), generator=generator)
    moves = torch.rand(n, h, w, generator=generator) < 0.5
    rows = torch.arange(h).view(1, h, 1) + offsets[0] * moves
    cols = torch.arange(w).view(1, 1, w) + offsets[1] * moves
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(images.reshape(n, c, h * w), 2, source.to(images.device)).view(n, c, h, w)


def glass_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur, ``rounds`` of local pixel shuffling, Gaussian blur again (MNIST-C ``glass_blur``)."""
    sigma, radius, rounds = ((0.4, 1, 1), (0.5, 1, 2), (0.7, 1, 2), (0.8, 2, 2), (1.0, 2, 3))[severity - 1]
    out = _gaussian_blur(images, sigma)
    for _ in range(rounds):
        out = _local_shuffle(out, max(1, round(radius * _pixel_scale(images))), generator)
    return _gaussian_blur(out, sigma)


def motion_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """One-sided streak: Σ_t w_t · shift(x, t·(cos θ, sin θ)), t = 0..⌈3σ⌉, w_t ∝ exp(−t²/2σ²), θ ~ U(−45°, 45°)
    per image (ImageMagick's motion blur, which MNIST-C calls)."""
    sigma = (1.0, 1.5, 2.0, 2.5, 3.0)[severity - 1] * _pixel_scale(images)
    angles = (torch.rand(images.shape[0], generator=generator) * 90.0 - 45.0) * math.pi / 180.0
    steps = torch.arange(math.ceil(3 * sigma) + 1, dtype=images.dtype)
    weights = torch.exp(-steps**2 / (2 * sigma**2))
    weights = weights / weights.sum()
    out = torch.zeros_like(images)
    for step, weight in zip(steps, weights):
        out += weight * _translate_per_image(images, step * torch.cos(angles), step * torch.sin(angles))
    return out


# ---------------------------------------------------------------- geometry

def shear(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Horizontal shear by ±c radians about the centre, the sign drawn per image."""
    degrees = math.degrees((0.2, 0.4, 0.6, 0.8, 1.0)[severity - 1])
    signs = _random_signs(images.shape[0], generator)
    return _per_group(images, signs, lambda rows, key: _affine(rows, shear=key[0] * degrees))


def scale(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Zoom out about the centre by a factor .9 .. .5 (no randomness)."""
    return _affine(images, scale=(0.9, 0.8, 0.7, 0.6, 0.5)[severity - 1])


def rotate(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Rotation by ±c radians about the centre, the sign drawn per image."""
    degrees = math.degrees((0.2, 0.4, 0.6, 0.8, 1.0)[severity - 1])
    signs = _random_signs(images.shape[0], generator)
    return _per_group(images, signs, lambda rows, key: _affine(rows, angle=key[0] * degrees))


def translate(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Shift by (±c, ±c) whole pixels, both signs drawn per image."""
    pixels = round((1, 2, 3, 4, 5)[severity - 1] * _pixel_scale(images))
    signs = torch.stack([_random_signs(images.shape[0], generator), _random_signs(images.shape[0], generator)], 1)
    return _per_group(images, signs, lambda rows, key: _affine(rows, translate=(key[0] * pixels, key[1] * pixels)))


# ---------------------------------------------------------------- digital and weather (hand-written)

def brightness(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """HSV value + c (clipped at 1), hue and saturation kept: x · min(1, v + c) / v with v = max over channels, and
    grey min(1, c) where v = 0; for one channel this is min(1, x + c)."""
    lift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    value = images.amax(dim=1, keepdim=True)
    lifted = (value + lift).clamp(max=1.0)
    return torch.where(value > 0, images * lifted / value.clamp(min=1e-12), lifted.expand_as(images))


def stripe(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Invert (1 − x) the outer columns on both sides, a fraction .10 .. .30 of the width each (MNIST-C: 7 of 28)."""
    width = images.shape[-1]
    band = max(1, round((0.10, 0.15, 0.20, 0.25, 0.30)[severity - 1] * width))
    columns = torch.arange(width, device=images.device)
    outer = (columns < band) | (columns >= width - band)
    return torch.where(outer, 1.0 - images, images)


def fractal_noise(count: int, height: int, width: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """Per image, Σ_o decay^(−o) · U(−1, 1) noise on a (2^o + 1)² lattice, bilinearly upsampled, min-max scaled to
    [0, 1]: a batched stand-in for the diamond-square plasma fractal of MNIST-C's fog. Shape (count, 1, H, W)."""
    size = 1 << math.ceil(math.log2(max(height, width, 2)))
    total = torch.zeros(count, 1, size, size)
    for octave in range(1, int(math.log2(size)) + 1):
        lattice = torch.rand(count, 1, (1 << octave) + 1, (1 << octave) + 1, generator=generator) * 2 - 1
        total += decay ** (-octave) * F.interpolate(lattice, size=(size, size), mode="bilinear", align_corners=True)
    total = total[..., :height, :width]
    low = total.amin(dim=(2, 3), keepdim=True)
    high = total.amax(dim=(2, 3), keepdim=True)
    return (total - low) / (high - low).clamp(min=1e-12)


def fog(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """(x + c·fog) · m / (m + c), m = the image's maximum (MNIST-C ``fog``)."""
    strength, decay = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.75, 1.5), (3.0, 1.4))[severity - 1]
    n, _, h, w = images.shape
    field = fractal_noise(n, h, w, decay, generator).to(images)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images + strength * field) * peak / (peak + strength)


def _zigzag_strokes(n: int, h: int, w: int, amplitude: float, generator: torch.Generator) -> torch.Tensor:
    """One zigzag per image, intensity in [0, 1], shape (n, 1, h, w).

    As in MNIST-C: a line from column 2 to column W−3 (scaled), starting row ~ U[0, H), rise ~ U(−5, 5) px; along it
    a triangle wave of half-period a = 2 px and amplitude b; a pixel at perpendicular distance d from the wave gets
    max(0, 1 + log(1 − d/2.3)) (MNIST-C's line profile)."""
    s = w / 28.0
    start_col, end_col = 2 * s, w - 1 - 2 * s
    start_row = torch.rand(n, generator=generator) * (h - 1)
    rise = (torch.rand(n, generator=generator) * 10 - 5) * s
    theta = torch.atan2(rise, torch.full_like(rise, end_col - start_col))
    length = (end_col - start_col) / torch.cos(theta)
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1) - start_row.view(n, 1, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, w) - start_col
    cos, sin = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    along, across = cols * cos + rows * sin, -cols * sin + rows * cos
    half_period = 2.0 * s
    wave = amplitude * s * ((torch.remainder(along / half_period - 1, 4) - 2).abs() - 1)  # 0, +b, 0, −b, ...
    slope = amplitude / 2.0
    distance = (across - wave).abs() / math.sqrt(1 + slope**2)
    width = 2.3 * s
    profile = (1 + torch.log1p(-distance.clamp(max=width * (1 - 1e-6)) / width)).clamp(min=0)
    inside = (along >= 0) & (along <= length.view(n, 1, 1))
    return (profile * inside).unsqueeze(1)


def zigzag(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """x + Σ zigzag strokes, clipped (white strokes on every channel)."""
    lines, amplitude = ((1, 1.5), (1, 2.5), (2, 2.0), (2, 3.0), (3, 3.0))[severity - 1]
    n, _, h, w = images.shape
    strokes = sum(_zigzag_strokes(n, h, w, amplitude, generator) for _ in range(lines))
    return images + strokes.to(images)


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "translate": translate,
    "brightness": brightness,
    "stripe": stripe,
    "fog": fog,
    "zigzag": zigzag,
}


def corrupt(images: torch.Tensor, family: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Apply ``CORRUPTIONS[family]`` at ``severity`` (1..5) to float images ``(N, C, H, W)`` in [0, 1]; the result
    is clipped to [0, 1]. Randomness is drawn from ``generator`` only."""
    require(family in CORRUPTIONS, f"family={family!r} is not known: expected one of {', '.join(CORRUPTIONS)}")
    severity = require_int_in_range("severity", severity, SEVERITIES[0], SEVERITIES[-1])
    require(images.ndim == 4 and images.is_floating_point(),
            f"images of shape {tuple(images.shape)} and dtype {images.dtype}: expected float (N, C, H, W)")
    if images.numel() and not (images.min() >= 0 and images.max() <= 1):
        raise BadInput(f"images range over [{images.min():.3g}, {images.max():.3g}]: expected pixels in [0, 1] "
                       "(corrupt before normalising)")
    return CORRUPTIONS[family](images, severity, generator).clamp(0.0, 1.0)
