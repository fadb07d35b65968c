"""Batched, generator-driven augmentation: one gather per batch, no per-sample Python loop."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("none", "crop", "flip_crop", "random_resized_crop")
#: random_resized_crop's ranges, as torchvision's RandomResizedCrop: share of the area and aspect ratio
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def augment_batch(x: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Augment a (N, C, H, W) batch; the same generator state gives the same result.

    "crop": random crop of the zero-padded image (padding max(1, H // 8));
    "flip_crop": the same crop plus a random horizontal flip;
    "random_resized_crop": a random region (8-100% of the area, aspect 3/4-4/3) resized back to
    H x W, plus a random horizontal flip.
    """
    if mode not in MODES:
        raise ValueError(f"unknown augment mode {mode!r} (known: {', '.join(MODES)})")
    if mode == "none":
        return x
    if mode == "random_resized_crop":
        return random_resized_crop(x, generator)
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


def random_resized_crop(x: Tensor, generator: torch.Generator) -> Tensor:
    """Batched RandomResizedCrop + horizontal flip: one roi_align call per batch (one bilinear sample per output
    pixel: the region is never larger than the output, so this is a plain bilinear resize of the crop).

    Unlike torchvision's per-image retry loop, a region that does not fit is shrunk to fit (the
    side that overflows is clipped to the image), so every draw is used and the batch needs no loop.
    """
    from torchvision.ops import roi_align  # here: importing torchvision takes a second and only this mode needs it

    n, _, h, w = x.shape
    area = h * w * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * torch.rand(n, generator=generator))
    log_ratio = math.log(CROP_RATIO[0]) + (math.log(CROP_RATIO[1]) - math.log(CROP_RATIO[0])) * torch.rand(
        n, generator=generator)
    ratio = torch.exp(log_ratio)
    crop_w = torch.sqrt(area * ratio).clamp(1.0, w)
    crop_h = torch.sqrt(area / ratio).clamp(1.0, h)
    left = (w - crop_w) * torch.rand(n, generator=generator)
    top = (h - crop_h) * torch.rand(n, generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), left, top, left + crop_w, top + crop_h], 1)
    out = roi_align(x, boxes.to(x.device, x.dtype), output_size=(h, w), spatial_scale=1.0, sampling_ratio=1,
                    aligned=True)
    return torch.where(flip.to(x.device)[:, None, None, None], out.flip(-1), out)
