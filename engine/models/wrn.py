"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016) as RepDistiller builds them: wrn_16_2, wrn_40_1, wrn_40_2.

WRN-d-k: a 3x3 stem with 16 channels, three stages of (d - 4) / 6 pre-activation blocks with
16k/32k/64k channels (a 1x1 shortcut conv where the width or stride changes), a final BN+ReLU,
global average pooling and a linear layer; no dropout. Module names (conv1, block1..3.layer.i with
bn1/conv1/bn2/conv2/convShortcut, bn1, fc) match RepDistiller's so its checkpoints load unchanged.

Spots: conv1 (the stem conv), layer1..layer3 (the outputs of block1..block3), pool (the embedding),
fc. The network is pre-activation, so a stage's output is a raw residual sum with no ReLU of its own;
RepDistiller's FitNet and AT read exactly these maps.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.registry import MODELS

SPOTS = {"conv1": "conv1", "layer1": "block1", "layer2": "block2", "layer3": "block3", "pool": "flatten", "fc": "fc"}


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice; the shortcut reads the activated input when it needs a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        # RepDistiller projects only on a width change (a stride change always comes with one here);
        # the camel-case name is theirs, kept so their checkpoints load.
        self.convShortcut = (  # noqa: N815
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if c_in != c_out else None
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    blocks = [PreActBlock(c_in, c_out, stride)] + [PreActBlock(c_out, c_out, 1) for _ in range(n - 1)]
    return nn.Sequential(OrderedDict(layer=nn.Sequential(*blocks)))  # the extra ".layer" level keeps RepDistiller's key names


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = _stage(widths[0], widths[1], n, stride=1)
        self.block2 = _stage(widths[1], widths[2], n, stride=2)
        self.block3 = _stage(widths[2], widths[3], n, stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # adaptive: any input size
        return self.fc(x)


def _register(depth: int, widen: int) -> None:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels)

    name = f"wrn_{depth}_{widen}"
    build.__name__ = f"build_{name}"
    description = f"Wide ResNet-{depth}-{widen} for CIFAR (RepDistiller), {(depth - 4) // 6} blocks per stage"
    MODELS.register(name, description, spots=SPOTS)(build)


for _depth, _widen in ((16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
