"""The CIFAR-100 distillation zoo (RepDistiller's architectures): sizes, spots, tracing and gradients."""
from __future__ import annotations

import pytest
import torch

from engine.models import build_model
from engine.models.spots import TappedModel, list_spots

CIFAR = (3, 32, 32)
# Millions of parameters at 100 classes, as RepDistiller reports them.
PARAMS_M = {
    "resnet8x4": 1.2, "resnet32x4": 7.4, "wrn_16_2": 0.7, "wrn_40_1": 0.57, "wrn_40_2": 2.2,
    "vgg8": 3.9, "vgg13": 9.4, "mobilenetv2": 0.8, "shufflenetv1": 0.9, "shufflenetv2": 1.3,
}
STAGES = {"vgg8": 4, "vgg13": 4, "mobilenetv2": 4}  # the others have three stages after the stem
# One parameter name per model in RepDistiller's naming, so its published checkpoints load.
REPDISTILLER_KEY = {
    "resnet8x4": "layer1.0.downsample.1.running_var", "resnet32x4": "layer3.4.bn2.weight",
    "wrn_16_2": "block1.layer.0.convShortcut.weight", "wrn_40_1": "block3.layer.5.conv2.weight",
    "wrn_40_2": "bn1.bias", "vgg8": "block4.0.bias", "vgg13": "block1.4.running_mean",
    "mobilenetv2": "blocks.6.0.conv.7.weight", "shufflenetv1": "layer2.7.conv3.weight",
    "shufflenetv2": "layer3.0.bn5.weight",
}


@pytest.mark.parametrize("arch", sorted(PARAMS_M))
def test_parameter_count_matches_repdistiller(arch: str) -> None:
    model = build_model(arch, 100, *CIFAR[:2])
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - PARAMS_M[arch]) <= 0.1 * PARAMS_M[arch], f"{arch}: {count:.3f}M"
    assert REPDISTILLER_KEY[arch] in model.state_dict()


@pytest.mark.parametrize("arch", sorted(PARAMS_M))
def test_every_spot_traces_matches_forward_and_backpropagates(arch: str) -> None:
    spots = list_spots(arch, CIFAR, 100)
    stages = [f"layer{i + 1}" for i in range(STAGES.get(arch, 3))]
    assert [s.name for s in spots] == ["conv1", *stages, "pool", "fc"]
    torch.manual_seed(0)
    model = build_model(arch, 100, *CIFAR[:2])
    tapped = TappedModel(model, arch, [s.name for s in spots]).train()
    x = torch.randn(2, *CIFAR)
    out = tapped(x)
    for spot in spots:
        assert tuple(out[spot.name].shape) == (2, *spot.shape), spot.name
    # A loss touching every tap reaches the stem: each spot is wired into the graph.
    loss = sum(t.float().pow(2).mean() for t in out.values())
    loss.backward()
    stem = next(model.parameters())
    assert stem.grad is not None and torch.isfinite(stem.grad).all() and stem.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["vgg13", "mobilenetv2", "shufflenetv2"])
def test_tapped_logits_equal_the_plain_forward(arch: str) -> None:
    model = build_model(arch, 100, *CIFAR[:2]).eval()
    tapped = TappedModel(model, arch, ["layer2", "pool"]).eval()
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        assert torch.allclose(tapped(x)["fc"], model(x), atol=1e-6)


def test_mobilenetv2_width_param() -> None:
    full = build_model("mobilenetv2", 100, 3, 32, {"width": 1.0})
    assert 2.2e6 < sum(p.numel() for p in full.parameters()) < 2.5e6
    with pytest.raises(ValueError, match="'width'"):
        build_model("mobilenetv2", 100, 3, 32, {"width": 0})
