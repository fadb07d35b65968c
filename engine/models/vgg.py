"""CIFAR VGGs with batch norm and no hidden FC layers, as RepDistiller builds them: vgg8, vgg13.

Five blocks of 3x3 conv + BN + ReLU (vgg8: one conv per block; vgg13: two), 2x2 max pooling after
blocks 0..2 only (so 32x32 inputs reach blocks 3 and 4 at 4x4, as in RepDistiller), global average
pooling and one linear layer. Module names (block0..4 with conv/BN indices 0,1,3,4, classifier)
match RepDistiller's vgg*_bn, so its checkpoints load unchanged: each block's closing ReLU sits at
the end of the block, where it adds no parameters.

Spots: conv1 (block0's output), layer1..layer4 (block1..block4's outputs), pool (the 512-d
embedding), fc. Stage outputs are taken after the ReLU, the maps RepDistiller's FitNet and AT read.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.registry import MODELS

CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}
SPOTS = {
    "conv1": "block0", "layer1": "block1", "layer2": "block2", "layer3": "block3", "layer4": "block4",
    "pool": "flatten", "fc": "classifier",
}
POOLED_BLOCKS = 3  # blocks followed by 2x2 max pooling: 32 -> 16 -> 8 -> 4


def _block(c_in: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        if i > 0:
            layers.append(nn.ReLU(inplace=True))
        layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width)]
        c_in = width
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class CifarVGG(nn.Module):
    def __init__(self, config: list[list[int]], num_classes: int, in_channels: int) -> None:
        super().__init__()
        c_in = in_channels
        for i, widths in enumerate(config):
            self.add_module(f"block{i}", _block(c_in, widths))
            c_in = widths[-1]
        self.num_blocks = len(config)
        self.classifier = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_blocks):
            x = getattr(self, f"block{i}")(x)
            if i < POOLED_BLOCKS:
                x = F.max_pool2d(x, 2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def _register(name: str) -> None:
    config = CONFIGS[name]

    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return CifarVGG(config, num_classes, in_channels)

    build.__name__ = f"build_{name}"
    convs = sum(len(widths) for widths in config)
    description = f"RepDistiller's {name}: CIFAR VGG with BN, {convs} conv layers and one linear layer"
    MODELS.register(name, description, spots=SPOTS)(build)


for _name in CONFIGS:
    _register(_name)
