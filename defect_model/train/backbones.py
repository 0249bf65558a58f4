"""The networks a run can train: one registry entry per backbone, with how to build it, its usual input
size and how fast it trains on a CPU. Adding a backbone is one entry here.

No torch here: the settings (`config`) read the names without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    name: str
    builder: str  # the torchvision.models function that builds it (called with weights=None)
    native_size: int  # the input size it was designed for: the largest the product preset picks
    # Training images/s by image size (normalise, forward, backward, AdamW step; batch 32, channels_last,
    # tcmalloc, 2 threads, fp32), measured by bench/train_throughput.py. Used until a run on this machine has
    # measured the backbone; between and beyond the sizes the rate follows the power law through them.
    images_per_s: dict[int, float]
    summary: str


# Measured on the development machine (2 cores of an AMD EPYC without native bf16) on 2026-11-30, quiet.
REGISTRY: dict[str, Backbone] = {entry.name: entry for entry in (
    Backbone("resnet50", "resnet50", 224, {64: 51.9, 224: 5.3}, "the reference recipe's network"),
    Backbone("resnet34", "resnet34", 224, {64: 57.2, 224: 6.6}, "a middle size"),
    Backbone("resnet18", "resnet18", 224, {64: 104.2, 224: 12.5}, "smaller; quick trials and small datasets"),
)}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def backbone(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}.") from None
