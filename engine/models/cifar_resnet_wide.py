"""RepDistiller's 4x-wide CIFAR ResNets: resnet8x4 and resnet32x4 (teacher/student of the resnet32x4 pair).

Structure: a 3x3 stem with 32 channels, then three stages of basic blocks with 64/128/256 channels
(the first block of each stage changes the width, so it has a 1x1 conv + BN projection shortcut,
"option B"), global average pooling and a linear layer; depth 6n+2 gives n blocks per stage.
Module names (conv1, bn1, layer1..3 with conv1/bn1/conv2/bn2/downsample, fc) match RepDistiller's,
so its published CIFAR-100 teacher checkpoints load unchanged.

Spots: conv1 (the stem after BN+ReLU), layer1..layer3 (each stage's output after its final ReLU:
RepDistiller's FitNet and AT read these post-activation maps), pool (the 256-d embedding), fc.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.registry import MODELS

WIDTHS = (32, 64, 128, 256)  # stem, then the three stages
SPOTS = {"conv1": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "pool": "flatten", "fc": "fc"}


class ProjectionBlock(nn.Module):
    """Basic block whose shortcut is a strided 1x1 conv + BN whenever the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        changes = stride != 1 or c_in != c_out
        self.downsample: nn.Module = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if changes else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class WideCifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        stem, *stages = WIDTHS
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.layer1 = _stage(stem, stages[0], blocks_per_stage, stride=1)
        self.layer2 = _stage(stages[0], stages[1], blocks_per_stage, stride=2)
        self.layer3 = _stage(stages[1], stages[2], blocks_per_stage, stride=2)
        self.fc = nn.Linear(stages[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # Adaptive pooling (RepDistiller uses a fixed 8x8 window) lets any input size through.
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    blocks = [ProjectionBlock(c_in, c_out, stride)] + [ProjectionBlock(c_out, c_out, 1) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


def _register(depth: int) -> None:
    n = (depth - 2) // 6

    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return WideCifarResNet(n, num_classes, in_channels)

    build.__name__ = f"build_resnet{depth}x4"
    description = f"CIFAR ResNet-{depth}x4 (RepDistiller): 32/64/128/256 channels, {n} block(s) per stage"
    MODELS.register(f"resnet{depth}x4", description, spots=SPOTS)(build)


for _depth in (8, 32):
    _register(_depth)
