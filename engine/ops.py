"""Tensor operations shared by distillers, path methods and weightings (a neutral home: no plugin owns them): resizing a map
to another's grid, an embedding as a 1x1 map, triplet angles (RKD and AMTML)."""
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


def as_map(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, D, 1, 1); maps pass through."""
    return x if x.dim() == 4 else x[:, :, None, None]


def student_on_teacher_grid(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The student tap as a map at the teacher's spatial size (the teacher's target stays untouched)."""
    return resize_to(as_map(student), as_map(teacher).shape[-2:])


def triplet_angles(x: torch.Tensor) -> torch.Tensor:
    """(B, B, B): [i, j, k] = cos of the angle at x_i between x_j - x_i and x_k - x_i (0 when degenerate)."""
    flat = x.flatten(1)
    directions = F.normalize(flat[None, :, :] - flat[:, None, :], dim=2)  # [i, j] = unit(x_j - x_i)
    return directions @ directions.transpose(1, 2)
