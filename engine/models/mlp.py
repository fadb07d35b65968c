"""A plain multilayer perceptron on flattened images."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from engine.models.registry import MODELS


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(inplace=True)) for a, b in zip(widths, widths[1:])
        )
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        for layer in self.hidden:
            x = layer(x)
        return self.fc(x)


def mlp_spots(model: MLP) -> dict[str, str]:
    """fc1..fcK follow the hidden layers (after ReLU); pool is the last hidden layer."""
    spots = {f"fc{i + 1}": f"hidden.{i}" for i in range(len(model.hidden))}
    spots["pool"] = f"hidden.{len(model.hidden) - 1}"
    spots["fc"] = "fc"
    return spots


@MODELS.register("mlp", "multilayer perceptron on flattened pixels (param hidden: list of widths)", spots=mlp_spots)
def build_mlp(
    num_classes: int, in_channels: int, image_size: int, hidden: Sequence[int] = (128, 64)
) -> nn.Module:
    hidden = list(hidden) if isinstance(hidden, (list, tuple)) else hidden  # a tuple default avoids a shared list
    if not isinstance(hidden, list) or not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"mlp: param 'hidden' must be a non-empty list of positive integers, got {hidden!r}")
    return MLP(in_channels * image_size * image_size, hidden, num_classes)
