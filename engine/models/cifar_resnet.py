"""CIFAR ResNets (He et al. 2016, section 4.2): depth 6n+2, 16/32/64 channels, option-A shortcuts.

Module names follow the widely shared CIFAR-10 checkpoints (akamaster/pytorch_resnet_cifar10):
conv1, bn1, layer1..3 (blocks with conv1, bn1, conv2, bn2 and a parameter-free shortcut), linear,
so those state_dicts load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.registry import MODELS

SPOTS = {"conv1": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "pool": "flatten", "fc": "linear"}


class ShortcutA(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels; adds no parameters."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        changes = stride != 1 or c_in != c_out
        self.shortcut: nn.Module = ShortcutA(c_out - c_in) if changes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*(BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # Adaptive pooling (instead of a fixed 8x8 window) lets any input size through.
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x)


def _register(depth: int) -> None:
    n = (depth - 2) // 6

    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return CifarResNet(n, num_classes, in_channels)

    build.__name__ = f"build_resnet{depth}"
    MODELS.register(f"resnet{depth}", f"CIFAR ResNet-{depth} ({n} blocks per stage, option-A shortcuts)", spots=SPOTS)(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth)
