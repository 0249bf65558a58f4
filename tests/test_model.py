import pytest
import torch

from defect_model.train.model import build_model


@pytest.mark.parametrize("backbone, last_norm", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_starts_every_block_as_the_identity(backbone, last_norm):
    zeroed = build_model(backbone, 3, zero_init_residual=True)
    plain = build_model(backbone, 3)
    blocks = [m for layer in ("layer1", "layer2", "layer3", "layer4") for m in getattr(zeroed, layer)]
    assert blocks and all(torch.count_nonzero(getattr(b, last_norm).weight) == 0 for b in blocks)
    assert torch.count_nonzero(getattr(plain.layer1[0], last_norm).weight) > 0
    assert zeroed.state_dict().keys() == plain.state_dict().keys()  # the same checkpoint format


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="vgg16"):
        build_model("vgg16", 3)
