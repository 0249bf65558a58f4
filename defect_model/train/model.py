"""Build the network from a backbone name (the registry: `backbones`). Knows nothing of training."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision import models

from defect_model.train.backbones import backbone as registered


def build_model(backbone: str, num_classes: int, dropout: float = 0.2,
                zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet without pretrained weights, with dropout before a linear head.

    `zero_init_residual` changes only the initial weights (each block's last BatchNorm starts at 0),
    never the architecture: a checkpoint loads the same either way."""
    builder = registered(backbone).builder
    if num_classes < 2:
        raise ValueError("A classifier needs at least 2 classes.")
    net = getattr(models, builder)(weights=None, zero_init_residual=zero_init_residual)
    net.fc = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(net.fc.in_features, num_classes))
    return net


def head_linear(net: nn.Module) -> nn.Linear:
    """The final linear layer (after dropout) of a model built by build_model."""
    return net.fc[-1]


EARLY_STAGES = ("layer1", "layer2", "layer3")  # the stages before layer4, whose spatial means a forward pass also gives


class Activations(NamedTuple):
    """What a forward pass gives besides the logits: layer4's maps (the head's input; the Grad-CAM's) and the spatial
    means of the earlier stages' outputs (the unfamiliar score's other inputs)."""

    maps: torch.Tensor  # (N, K, h, w)
    stage_means: dict[str, torch.Tensor]  # EARLY_STAGES -> (N, K_stage)

    def means(self, stage: str) -> torch.Tensor:
        """Spatial means (N, K) of a stage's output, layer4 included."""
        return self.maps.float().mean(dim=(2, 3)) if stage == "layer4" else self.stage_means[stage].float()


def forward_parts(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Activations]:
    """One forward pass: the logits and the activations the heatmap and the unfamiliar score need.

    Calls the ResNet stages directly instead of registering hooks, so it is
    safe on a model shared between threads.
    """
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    means = {}
    for stage in EARLY_STAGES:
        x = getattr(net, stage)(x)
        means[stage] = x.mean(dim=(2, 3))
    maps = net.layer4(x)
    logits = net.fc(torch.flatten(net.avgpool(maps), 1))
    return logits, Activations(maps, means)


def warm_start(net: nn.Module, state: dict, source_classes: list[str] | None, classes: list[str],
               source: str = "the weights file") -> str:
    """Load `state` into `net` (built for `classes`); returns what was done, in words.

    The head is kept only when it was trained for the same classes; otherwise it stays freshly initialised.
    A torchvision-style head (`fc.weight`) is mapped onto ours (`fc.1.weight`, after the dropout).
    """
    state = {("fc.1." + key[3:] if key in ("fc.weight", "fc.bias") else key): value for key, value in state.items()}
    own = net.state_dict()
    same_head = source_classes == list(classes)
    usable = {key: value for key, value in state.items()
              if key in own and own[key].shape == value.shape and (same_head or not key.startswith("fc."))}
    body = [key for key in own if not key.startswith("fc.")]
    missing = [key for key in body if key not in usable]
    extra = [key for key in state if not key.startswith("fc.") and key not in own]
    if len(missing) > len(body) // 10 or len(extra) > len(body) // 10:
        example = (missing or extra)[0]
        raise ValueError(f"{source}: its weights do not fit this network ({len(missing)} of its {len(body)} tensors "
                         f"missing or of another shape, {len(extra)} the file has that it lacks, e.g. {example}). "
                         "Choose the backbone those weights were trained with.")
    net.load_state_dict(usable, strict=False)
    if same_head:
        return f"started from {source}: every layer, the head included (same classes)"
    before = f"its classes {', '.join(source_classes)}" if source_classes else "a head for other classes"
    return (f"started from {source}: {len(usable)} layers of the network; the head was rebuilt for "
            f"{', '.join(classes)} ({before})")
