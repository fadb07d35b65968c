"""ImageNet-style torchvision architectures, randomly initialised (no weights are downloaded)."""
from __future__ import annotations

import torchvision
from torch import nn

from engine.models.registry import MODELS

RESNET18_SPOTS = {
    "conv1": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4",
    "pool": "flatten", "fc": "fc",
}
# Stages end where the resolution halves: H/4 (16 ch), H/8 (24), H/16 (48), H/32 (576).
MOBILENET_SPOTS = {
    "stage1": "features.1", "stage2": "features.3", "stage3": "features.8", "stage4": "features.12",
    "pool": "flatten", "fc": "classifier.3",
}


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution for a different number of input channels, initialised as torchvision does."""
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


@MODELS.register("resnet18", "torchvision ResNet-18 (ImageNet stem), random init", spots=RESNET18_SPOTS)
def build_resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = _conv_like(model.conv1, in_channels)
    return model


@MODELS.register("mobilenet_v3_small", "torchvision MobileNetV3-Small, random init", spots=MOBILENET_SPOTS)
def build_mobilenet_v3_small(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.features[0][0] = _conv_like(model.features[0][0], in_channels)
    return model
