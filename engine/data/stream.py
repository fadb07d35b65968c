"""Training batches: shuffled positions of the train split, with their (augmented) images.

Two sources of images:
- live augmentation: a fresh random crop/flip of every sample in every step (no teacher cache);
- fixed views: K augmented copies of the train split made once (seeded), one drawn per
  sample per epoch, so teacher outputs can be cached per (view, sample).
Every batch carries the positions (rows of the train split) and view numbers it came from,
which is what a teacher-output cache is indexed by.

A streamed split (its ``x`` a DiskImages) is read through a ``torch.utils.data.DataLoader`` with
the split's worker processes, fed the very position chunks the in-memory path draws from the same
generator; augmentation then runs in the training process in the same order, so a streamed run
is the in-memory run, step for step. Fixed views are not made for streamed splits (they would
be the whole split again, in memory): the runner then serves the teacher cache by position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from engine.data.augment import augment_batch
from engine.data.bundle import Split
from engine.data.disk import DiskImages

VIEW_CHUNK = 1024  # images augmented at a time when making the fixed views


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    index: Tensor  # sample ids
    position: Tensor  # rows of the train split
    view: Tensor  # which fixed view each image is (0 without augmentation)


def make_views(split: Split, mode: str, count: int, seed: int) -> Tensor:
    """(count, N, C, H, W): `count` seeded augmented copies of the split (just the split when mode is none).

    A streamed split without augmentation gives a one-view stand-in that reads from disk; with
    augmentation it cannot have fixed views (ValueError)."""
    if mode == "none":
        return OneView(split.x) if split.streamed else split.x.unsqueeze(0)
    if split.streamed:
        raise ValueError("fixed augmented views of a streamed split would hold the whole split in memory")
    views = []
    for v in range(count):
        generator = torch.Generator().manual_seed(seed * 7_919 + v)
        chunks = [augment_batch(split.x[i:i + VIEW_CHUNK], mode, generator) for i in range(0, len(split), VIEW_CHUNK)]
        views.append(torch.cat(chunks))
    return torch.stack(views)


def _chunks(order: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


class OneView:
    """A streamed split seen as (1, N, C, H, W) views, for building a teacher cache chunk by chunk."""

    def __init__(self, images: DiskImages) -> None:
        self.images = images
        self.shape = torch.Size((1, *images.shape))

    def __getitem__(self, key: tuple[int, slice]) -> Tensor:
        view, rows = key
        if view != 0:
            raise IndexError(f"a streamed split has one view, not view {view}")
        return self.images[rows]


class _Rows(torch.utils.data.Dataset):
    """What DataLoader workers read: a whole batch of positions per item (one pread run per row)."""

    def __init__(self, images: DiskImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, positions: Tensor) -> Tensor:
        return self.images[positions]


def _images(x: Tensor | DiskImages, positions: list[Tensor]) -> Iterator[Tensor]:
    """The images of each chunk of positions, in order: indexed in memory, or read by the loader's workers."""
    if not isinstance(x, DiskImages) or x.workers == 0:
        return (x[position] for position in positions)
    loader = torch.utils.data.DataLoader(_Rows(x), batch_size=None, sampler=positions, num_workers=x.workers,
                                         pin_memory=torch.cuda.is_available())
    return iter(loader)


def live_batches(split: Split, batch_size: int, mode: str, generator: torch.Generator) -> Iterator[Batch]:
    """Shuffled batches, each augmented afresh from the epoch's generator."""
    positions = list(_chunks(torch.randperm(len(split), generator=generator), batch_size))
    for position, images in zip(positions, _images(split.x, positions)):
        x = augment_batch(images, mode, generator)
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
