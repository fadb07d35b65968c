"""Tensor operations shared by distillers and aggregators (a neutral home: no plugin owns them)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size): averaging when shrinking (the references' adaptive pooling),
    bilinear interpolation when any side grows."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
