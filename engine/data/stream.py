"""Training batches: shuffled positions of the train split, with their (augmented) images.

Two sources of images:
- live augmentation: a fresh random crop/flip of every sample in every step (no teacher cache);
- fixed views: K augmented copies of the train split made once (seeded), one drawn per
  sample per epoch, so teacher outputs can be cached per (view, sample).
Every batch carries the positions (rows of the train split) and view numbers it came from,
which is what a teacher-output cache is indexed by.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from engine.data.augment import augment_batch
from engine.data.bundle import Split

VIEW_CHUNK = 1024  # images augmented at a time when making the fixed views


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    index: Tensor  # sample ids
    position: Tensor  # rows of the train split
    view: Tensor  # which fixed view each image is (0 without augmentation)


def make_views(split: Split, mode: str, count: int, seed: int) -> Tensor:
    """(count, N, C, H, W): `count` seeded augmented copies of the split (just the split when mode is none)."""
    if mode == "none":
        return split.x.unsqueeze(0)
    views = []
    for v in range(count):
        generator = torch.Generator().manual_seed(seed * 7_919 + v)
        chunks = [augment_batch(split.x[i:i + VIEW_CHUNK], mode, generator) for i in range(0, len(split), VIEW_CHUNK)]
        views.append(torch.cat(chunks))
    return torch.stack(views)


def _chunks(order: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def live_batches(split: Split, batch_size: int, mode: str, generator: torch.Generator) -> Iterator[Batch]:
    """Shuffled batches, each augmented afresh from the epoch's generator."""
    for position in _chunks(torch.randperm(len(split), generator=generator), batch_size):
        x = augment_batch(split.x[position], mode, generator)
        yield Batch(x, split.y[position], split.index[position], position, torch.zeros_like(position))


def view_batches(split: Split, views: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Shuffled batches drawing, per sample and epoch, one of the fixed views (the same for the same generator).

    With a single view the generator is used exactly as by live_batches without augmentation,
    so a cached run sees the very batches an uncached one does.
    """
    order = torch.randperm(len(split), generator=generator)
    chosen = torch.randint(len(views), (len(split),), generator=generator) if len(views) > 1 else None
    for position in _chunks(order, batch_size):
        view = chosen[position] if chosen is not None else torch.zeros_like(position)
        yield Batch(views[view, position], split.y[position], split.index[position], position, view)
