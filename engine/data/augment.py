"""Batched, generator-driven augmentation: one gather per batch, no per-sample Python loop."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("none", "crop", "flip_crop")


def augment_batch(x: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Augment a (N, C, H, W) batch; the same generator state gives the same result.

    "crop": random crop of the zero-padded image (padding max(1, H // 8));
    "flip_crop": the same crop plus a random horizontal flip.
    """
    if mode not in MODES:
        raise ValueError(f"unknown augment mode {mode!r} (known: {', '.join(MODES)})")
    if mode == "none":
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    # Draw on the generator's (CPU) device so results do not depend on where x lives.
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if mode == "flip_crop" else torch.zeros(n, dtype=torch.bool)
    rows = dy[:, None] + torch.arange(h)  # (N, H) rows of the padded image
    cols_fwd = torch.arange(w)
    cols = dx[:, None] + torch.where(flip[:, None], cols_fwd.flip(0), cols_fwd)  # (N, W)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows, cols = rows.to(x.device), cols.to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channels, rows[:, None, :, None], cols[:, None, None, :]]
