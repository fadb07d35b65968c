"""A small conv net sized for 8x8 digits (two stages) and 28x28/32x32 images (three stages)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.models.registry import MODELS


def _stage(c_in: int, c_out: int, downsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if downsample else []
    layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int, num_stages: int) -> None:
        super().__init__()
        widths = [in_channels] + [width * 2**i for i in range(num_stages)]
        # Named conv1, conv2, ... so the module names are the spot names.
        for i in range(num_stages):
            self.add_module(f"conv{i + 1}", _stage(widths[i], widths[i + 1], downsample=i > 0))
        self.num_stages = num_stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_stages):
            x = getattr(self, f"conv{i + 1}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def small_cnn_spots(model: SmallCNN) -> dict[str, str]:
    spots = {f"conv{i + 1}": f"conv{i + 1}" for i in range(model.num_stages)}
    return spots | {"pool": "flatten", "fc": "fc"}


@MODELS.register("small_cnn", "small conv net: 2 stages below 16 px, else 3 (param width)", spots=small_cnn_spots)
def build_small_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 32) -> nn.Module:
    if not isinstance(width, int) or width <= 0:
        raise ValueError(f"small_cnn: param 'width' must be a positive integer, got {width!r}")
    # Each extra stage halves the side; 8x8 inputs only have room for one halving.
    return SmallCNN(in_channels, num_classes, width, num_stages=2 if image_size < 16 else 3)
