"""The CIFAR MobileNetV2 of RepDistiller ("mobile_half": expansion 6, width multiplier 0.5 by default).

A stride-2 3x3 stem, seven groups of inverted residual blocks (t, c, n, s as in the MobileNetV2
paper, but with strides 1,1,2,2,1,2,1 so 32x32 inputs end at 2x2), a 1x1 conv to 1280 channels,
global average pooling and one linear layer. Module names (conv1, blocks.g.i.conv.k, conv2,
classifier.0) match RepDistiller's so its checkpoints load unchanged.

Spots: conv1 (the stem, after its ReLU), layer1..layer4 (the outputs of block groups 1, 2, 4 and 6:
the four maps RepDistiller's FitNet and AT read), pool (the 1280-d embedding), fc. Inverted residual
blocks end in a linear 1x1 conv, so these stage outputs carry no ReLU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.registry import MODELS

# (expansion, channels at width 1, blocks, stride of the first block); expansion None = the model's.
GROUPS = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
          (None, 160, 3, 2), (None, 320, 1, 1)]
LAST_CHANNELS = 1280  # not scaled down for width < 1, as in RepDistiller
SPOTS = {
    "conv1": "conv1", "layer1": "blocks.1", "layer2": "blocks.2", "layer3": "blocks.4", "layer4": "blocks.6",
    "pool": "flatten", "fc": "classifier",
}


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, linear 1x1 project; a residual when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        # RepDistiller keeps the expanding 1x1 conv even at expansion 1 (torchvision drops it).
        self.conv = nn.Sequential(
            *_conv_bn_relu(c_in, hidden, 1),
            *_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float, expansion: int = 6) -> None:
        super().__init__()
        c_in = int(32 * width)
        self.conv1 = nn.Sequential(*_conv_bn_relu(in_channels, c_in, 3, stride=2))
        self.blocks = nn.ModuleList()
        for t, channels, n, stride in GROUPS:
            c_out = int(channels * width)
            group = []
            for i in range(n):
                group.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, t or expansion))
                c_in = c_out
            self.blocks.append(nn.Sequential(*group))
        last = int(LAST_CHANNELS * width) if width > 1.0 else LAST_CHANNELS
        self.conv2 = nn.Sequential(*_conv_bn_relu(c_in, last, 1))
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.conv2(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # adaptive: any input size
        return self.classifier(x)


@MODELS.register("mobilenetv2", "CIFAR MobileNetV2 (RepDistiller's mobile_half): expansion 6, param width (0.5)",
                 spots=SPOTS)
def build_mobilenetv2(num_classes: int, in_channels: int, image_size: int, width: float = 0.5) -> nn.Module:
    # Below 1/16 the narrowest group (16 channels at width 1) would have no channels left.
    if not isinstance(width, (int, float)) or isinstance(width, bool) or width < 1 / 16:
        raise ValueError(f"mobilenetv2: param 'width' must be a number >= 1/16, got {width!r}")
    return CifarMobileNetV2(num_classes, in_channels, float(width))
