"""The in-memory form every dataset is turned into, and the split/normalise pipeline.

A loader only has to produce raw images and labels (``RawSet``); ``make_bundle`` does the
rest the same way for every dataset: fixed splits seeded by ``spec.split_seed`` alone,
optional resize, scaling to [0, 1] and normalisation by the train split's statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.spec import DatasetSpec


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says which folder/file and how to fix it."""


@dataclass
class Split:
    x: Tensor  # float32 (N, C, H, W), normalised
    y: Tensor  # int64 (N,)
    index: Tensor  # int64 (N,), sample ids unique over the whole bundle

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataBundle:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units: x_raw = x * std + mean
    std: tuple[float, ...]
    train: Split
    val: Split
    test: Split

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)


@dataclass
class RawSet:
    """Images as a loader found them: x (N, C, H, W) of any numeric dtype, y int64 (N,)."""

    x: Tensor
    y: Tensor


def iterate_batches(
    split: Split, batch_size: int, shuffle: bool, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield (x, y, index) batches covering the split once; the last batch may be short."""
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.y.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            sl = slice(start, start + batch_size)
            yield split.x[sl], split.y[sl], split.index[sl]
        else:
            idx = order[start : start + batch_size]
            yield split.x[idx], split.y[idx], split.index[idx]


def stratified_order(y: Tensor, generator: torch.Generator) -> Tensor:
    """A random permutation of positions in which every prefix is close to stratified.

    Each sample gets its relative position inside its own (shuffled) class; sorting on
    that interleaves the classes in proportion, so taking the first k samples of the
    order gives a class-balanced subset for any k. This keeps carving val/test and
    capping train one simple slicing operation.
    """
    perm = torch.randperm(len(y), generator=generator)
    y_perm = y[perm]
    by_class = torch.argsort(y_perm, stable=True)  # stable: keeps the random order within a class
    sorted_y = y_perm[by_class]
    counts = torch.bincount(sorted_y)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(y)) - starts[sorted_y]
    relative = (rank.double() + 0.5) / counts[sorted_y].double()
    return perm[by_class[torch.argsort(relative, stable=True)]]


def _carve(positions: Tensor, y: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split ``positions`` into (rest, held) with ``fraction`` of them held out, stratified by y."""
    order = positions[stratified_order(y[positions], generator)]
    n_held = round(fraction * len(order))
    return order[n_held:], order[:n_held]


def _resize(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    # Chunked so a large set does not need a second full-size float copy at once.
    chunks = [
        F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        for c in torch.split(x, 4096)
    ]
    return torch.cat(chunks)


def _prepare(x: Tensor, pixel_max: float, size: int) -> Tensor:
    return _resize(x.float() / pixel_max, size)


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    std, mean = torch.std_mean(x.transpose(0, 1).reshape(x.shape[1], -1), dim=1)
    return mean, std.clamp_min(1e-6)  # a constant channel must not divide by zero


def make_bundle(
    name: str,
    class_names: list[str],
    spec: DatasetSpec,
    train: RawSet,
    test: RawSet | None,
    pixel_max: float,
) -> DataBundle:
    """Split, resize, scale by ``pixel_max`` to [0, 1] and normalise into a DataBundle.

    Sample ids are positions in ``train`` followed by positions in ``test`` (when the
    dataset has an official test set), so they are stable for a given dataset.
    """
    gen = torch.Generator().manual_seed(spec.split_seed)
    pool = torch.arange(len(train.y))
    if test is None:
        pool, test_pos = _carve(pool, train.y, spec.test_fraction, gen)
        test_x, test_y, test_ids = train.x[test_pos], train.y[test_pos], test_pos
    else:
        test_x, test_y = test.x, test.y
        test_ids = torch.arange(len(test.y)) + len(train.y)
    train_pos, val_pos = _carve(pool, train.y, spec.val_fraction, gen)
    if spec.train_size is not None:
        train_pos = train_pos[: spec.train_size]  # the carve order is stratified, so a prefix is too

    size = spec.image_size or int(train.x.shape[-1])
    train_x = _prepare(train.x[train_pos], pixel_max, size)
    mean, std = _channel_stats(train_x)

    def split(x: Tensor, y: Tensor, ids: Tensor, scaled: bool = False) -> Split:
        x = x if scaled else _prepare(x, pixel_max, size)
        x = (x - mean[:, None, None]) / std[:, None, None]
        return Split(x.contiguous(), y.long().clone(), ids.long().clone())

    return DataBundle(
        name=name,
        num_classes=len(class_names),
        in_channels=int(train.x.shape[1]),
        image_size=size,
        class_names=list(class_names),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        train=split(train_x, train.y[train_pos], train_pos, scaled=True),
        val=split(train.x[val_pos], train.y[val_pos], val_pos),
        test=split(test_x, test_y, test_ids),
    )
