"""Build the network from a backbone name (the registry: `backbones`) and split its forward pass into the parts
serving needs: the logits, the heatmap's maps and the earlier stages' means. Knows nothing of training.

Every registered family answers the same three questions (`forward_parts`, `head_linear`, `warm_start`), so
nothing in serving or the workflows depends on what kind of network a checkpoint holds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from defect_model.common.backbones import backbone as registered


def build_model(backbone: str, num_classes: int, dropout: float = 0.2,
                zero_init_residual: bool = False, pretrained: bool = False) -> nn.Module:
    """The registered network without a classifier of its own, with dropout before a linear head (`head_name`).

    `zero_init_residual` (ResNets) changes only the initial weights (each block's last BatchNorm starts at 0),
    never the architecture: a checkpoint loads the same either way. `pretrained` reads the backbone's ImageNet
    weights from their installed package (train.pretrained); the head stays freshly initialised."""
    entry = registered(backbone)
    if num_classes < 2:
        raise ValueError("A classifier needs at least 2 classes.")
    if entry.family == "resnet":
        from torchvision import models

        net = getattr(models, entry.builder)(weights=None, zero_init_residual=zero_init_residual)
        net.fc = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(net.fc.in_features, num_classes))
    else:
        import timm

        net = timm.create_model(entry.builder, pretrained=False, num_classes=num_classes, drop_rate=0.0)
        net.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(net.num_features, num_classes))
    net.backbone_name = entry.name  # a plain attribute: not in the state dict, read by stages_of
    if pretrained:
        from defect_model.train.pretrained import load_imagenet_weights

        load_imagenet_weights(net, entry)
    return net


def head_name(net: nn.Module) -> str:
    """The attribute holding the (dropout, linear) head: `fc` on a ResNet, `classifier` on an EfficientNet."""
    return registered(net.backbone_name).head


def head_linear(net: nn.Module) -> nn.Linear:
    """The final linear layer (after dropout) of a model built by build_model."""
    return getattr(net, head_name(net))[-1]


def stages_of(net: nn.Module) -> tuple[str, ...]:
    """The stage names forward_parts reports for this network, shallow to deep (the last one is the maps)."""
    return registered(net.backbone_name).stages


class Activations(NamedTuple):
    """What a forward pass gives besides the logits: the last stage's maps (the head's input; the Grad-CAM's) and
    the spatial means of the earlier stages' outputs (the unfamiliar score's other inputs)."""

    maps: torch.Tensor  # (N, K, h, w)
    stage_means: dict[str, torch.Tensor]  # earlier stages -> (N, K_stage)

    def means(self, stage: str) -> torch.Tensor:
        """Spatial means (N, K) of a stage's output, the maps' stage included."""
        return self.stage_means[stage].float() if stage in self.stage_means else self.maps.float().mean(dim=(2, 3))


def early_stages(net: nn.Module) -> tuple[str, ...]:
    """The stages whose means a forward pass gives beside the maps."""
    return stages_of(net)[:-1]


def forward_parts(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Activations]:
    """One forward pass: the logits and the activations the heatmap and the unfamiliar score need.

    Calls the network's stages directly instead of registering hooks, so it is safe on a model shared between
    threads."""
    means = {}
    if registered(net.backbone_name).family == "resnet":
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for stage in early_stages(net):
            x = getattr(net, stage)(x)
            means[stage] = x.mean(dim=(2, 3))
        maps = net.layer4(x)
    else:
        wanted = set(early_stages(net))
        x = net.bn1(net.conv_stem(x))
        for index, block in enumerate(net.blocks):
            x = block(x)
            if f"blocks.{index}" in wanted:
                means[f"blocks.{index}"] = x.mean(dim=(2, 3))
        maps = net.bn2(net.conv_head(x))
    logits = getattr(net, head_name(net))(maps.mean(dim=(2, 3)))
    return logits, Activations(maps, means)


def stage_layer(net: nn.Module, stage: str) -> nn.Module:
    """The module whose output is a named stage's output (where pytorch_grad_cam hooks in)."""
    if registered(net.backbone_name).family == "resnet":
        return getattr(net, stage)[-1]
    return net.bn2 if stage == "head" else net.blocks[int(stage.split(".")[1])]


def warm_start(net: nn.Module, state: dict, source_classes: list[str] | None, classes: list[str],
               source: str = "the weights file") -> str:
    """Load `state` into `net` (built for `classes`); returns what was done, in words.

    The head is kept only when it was trained for the same classes; otherwise it stays freshly initialised.
    A plain head (`fc.weight`, `classifier.weight`) is mapped onto ours (`fc.1.weight`, after the dropout).
    """
    head = head_name(net) + "."
    state = {(head + "1." + key.split(".", 1)[1] if key in (head + "weight", head + "bias") else key): value
             for key, value in state.items()}
    own = net.state_dict()
    same_head = source_classes == list(classes)
    usable = {key: value for key, value in state.items()
              if key in own and own[key].shape == value.shape and (same_head or not key.startswith(head))}
    body = [key for key in own if not key.startswith(head)]
    missing = [key for key in body if key not in usable]
    extra = [key for key in state if not key.startswith(head) and key not in own]
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
