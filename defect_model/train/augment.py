"""Training-time augmentation of uint8 photo batches, chosen for inspection photos.

Only changes that keep a defect's class: flips, 90-degree turns, small shifts,
rotations and zoom, brightness and contrast. Nothing that blurs away a fine
scratch or changes its colour into another defect.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

STRENGTHS = ("none", "soft", "strong")


def _flip_and_turn(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flips = torch.rand(2, generator=generator) < 0.5
    if flips[0]:
        image = image.flip(-1)
    if flips[1]:
        image = image.flip(-2)
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    if turns and image.shape[-1] == image.shape[-2]:
        image = torch.rot90(image, turns, dims=(-2, -1))
    return image


def _affine_and_light(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(6, generator=generator)
    size = image.shape[-1]
    image = TF.affine(image, angle=float(u[0] * 20 - 10),
                      translate=[int((u[1] - 0.5) * 0.16 * size), int((u[2] - 0.5) * 0.16 * size)],
                      scale=float(0.9 + u[3] * 0.2), shear=[0.0, 0.0],
                      interpolation=InterpolationMode.BILINEAR)
    pixels = image.float()
    mean = pixels.mean()
    contrast, brightness = 0.8 + 0.4 * float(u[4]), (float(u[5]) - 0.5) * 0.4 * 255 * 0.5
    return ((pixels - mean) * contrast + mean + brightness).clamp_(0, 255).to(torch.uint8)


def augment_batch(pixels: torch.Tensor, strength: str, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> augmented copy; `none` returns the batch unchanged."""
    if strength == "none":
        return pixels
    if strength not in STRENGTHS:
        raise ValueError(f"unknown augmentation {strength!r}; choose one of {', '.join(STRENGTHS)}")
    out = torch.empty_like(pixels)
    for i in range(len(pixels)):
        image = _flip_and_turn(pixels[i], generator)
        if strength == "strong":
            image = _affine_and_light(image, generator)
        out[i] = image
    return out
