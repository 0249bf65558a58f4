"""Build the network from a backbone name. Knows nothing of training."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from .config import BACKBONES


def build_model(backbone: str, num_classes: int, dropout: float = 0.2,
                zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet without pretrained weights, with dropout before a linear head.

    `zero_init_residual` changes only the initial weights (each block's last BatchNorm starts at 0),
    never the architecture: a checkpoint loads the same either way."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}.")
    if num_classes < 2:
        raise ValueError("A classifier needs at least 2 classes.")
    net = getattr(models, backbone)(weights=None, zero_init_residual=zero_init_residual)
    net.fc = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(net.fc.in_features, num_classes))
    return net


def head_linear(net: nn.Module) -> nn.Linear:
    """The final linear layer (after dropout) of a model built by build_model."""
    return net.fc[-1]


def features_and_logits(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass that also returns the layer4 activation maps.

    Calls the ResNet stages directly instead of registering hooks, so it is
    safe on a model shared between threads.
    """
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    logits = net.fc(torch.flatten(net.avgpool(x), 1))
    return x, logits
