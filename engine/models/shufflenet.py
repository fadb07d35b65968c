"""The CIFAR ShuffleNets of RepDistiller: shufflenetv1 (groups 3) and shufflenetv2 (net size 1x).

Both use a 1x1 stem with 24 channels and no early downsampling, then three stages that each halve
the resolution once (32 -> 16 -> 8 -> 4), global average pooling and one linear layer.
- v1: 240/480/960 channels, 4/8/4 bottlenecks (grouped 1x1 convs, channel shuffle, depthwise 3x3;
  the downsampling bottleneck concatenates an average-pooled shortcut).
- v2: 116/232/464 channels, a downsampling block plus 3/7/3 split-transform-shuffle blocks per
  stage, then a 1x1 conv to 1024 channels before pooling.
Module names match RepDistiller's (conv1, bn1, layer1..3, conv2/bn2 in v2, linear), so its
checkpoints load unchanged.

Spots: conv1 (the stem after BN+ReLU), layer1..layer3 (each stage's output: after the final ReLU in
v1, after the final channel shuffle in v2, the maps RepDistiller's FitNet and AT read), pool (the
embedding: 960-d in v1, 1024-d in v2), fc.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.registry import MODELS

STEM = 24
SPOTS = {"conv1": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "pool": "flatten", "fc": "linear"}


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(N, g*k, H, W) -> (N, k*g, H, W), interleaving the groups.

    Written with unflatten/transpose/flatten rather than view(N, g, k, H, W) so no size is read
    from the tensor: torch.fx can then trace it.
    """
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)


def _global_pool(x: Tensor) -> Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # adaptive: any input size


# ------------------------------------------------------------------ v1
class ShuffleBottleneck(nn.Module):
    """Grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; stride 2 concatenates a pooled shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = c_out // 4
        # The stem has only 24 channels: the first 1x1 conv after it is not grouped.
        self.first_groups = 1 if c_in == STEM else groups
        self.conv1, self.bn1 = _conv_bn(c_in, mid, 1, groups=self.first_groups)
        self.conv2, self.bn2 = _conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3, self.bn3 = _conv_bn(mid, c_out, 1, groups=groups)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], groups: int, num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, STEM, 1)
        c_in = STEM
        for i, (width, n) in enumerate(zip(widths, blocks)):
            # The downsampling block's own branch supplies only the channels its shortcut does not.
            layers = [ShuffleBottleneck(c_in, width - c_in, 2, groups)]
            layers += [ShuffleBottleneck(width, width, 1, groups) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            c_in = width
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(_global_pool(x))


# ------------------------------------------------------------------ v2
class SplitBlock(nn.Module):
    """Half the channels pass through; the other half go 1x1, depthwise 3x3, 1x1; then shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.conv1, self.bn1 = _conv_bn(self.half, self.half, 1)
        self.conv2, self.bn2 = _conv_bn(self.half, self.half, 3, groups=self.half)
        self.conv3, self.bn3 = _conv_bn(self.half, self.half, 1)

    def forward(self, x: Tensor) -> Tensor:
        kept, branch = x[:, : self.half], x[:, self.half:]  # a fixed split point keeps fx tracing simple
        out = F.relu(self.bn1(self.conv1(branch)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([kept, out], 1), 2)


class DownBlock(nn.Module):
    """Two strided branches (depthwise then 1x1; 1x1, depthwise, 1x1), concatenated and shuffled."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_out // 2
        self.conv1, self.bn1 = _conv_bn(c_in, c_in, 3, 2, groups=c_in)
        self.conv2, self.bn2 = _conv_bn(c_in, mid, 1)
        self.conv3, self.bn3 = _conv_bn(c_in, mid, 1)
        self.conv4, self.bn4 = _conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = _conv_bn(mid, mid, 1)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], last: int, num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, STEM, 1)
        c_in = STEM
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layers = [DownBlock(c_in, width), *(SplitBlock(width) for _ in range(n))]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            c_in = width
        self.conv2, self.bn2 = _conv_bn(c_in, last, 1)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(_global_pool(F.relu(self.bn2(self.conv2(x)))))


@MODELS.register("shufflenetv1", "CIFAR ShuffleNet v1 (RepDistiller's ShuffleV1): groups 3, 240/480/960 channels",
                 spots=SPOTS)
def build_shufflenetv1(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)


@MODELS.register("shufflenetv2", "CIFAR ShuffleNet v2 1x (RepDistiller's ShuffleV2): 116/232/464 channels",
                 spots=SPOTS)
def build_shufflenetv2(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return ShuffleNetV2((116, 232, 464), (3, 7, 3), 1024, num_classes, in_channels)
