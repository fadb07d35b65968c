"""The form every dataset is turned into, and the split/normalise pipeline.

A loader only has to produce raw images and labels (``RawSet``); ``make_bundle`` does the
rest the same way for every dataset: fixed splits seeded by ``spec.split_seed`` alone
(``plan_splits``), optional resize, scaling to [0, 1] and normalisation (``normalization``:
the train split's statistics by default, ImageNet's, none, or explicit values).
Image folders go their own way through a decoded uint8 file on disk (image_folder.py), with
the same split plan and normalisation; their splits may stream from disk (disk.DiskImages).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.spec import DatasetSpec


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says which folder/file and how to fix it."""


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Split:
    #: float32 (N, C, H, W), normalised; or a DiskImages (a streamed split) that reads rows from disk
    #: when indexed the same ways (x[positions], x[a:b], len, shape)
    x: Tensor
    y: Tensor  # int64 (N,)
    index: Tensor  # int64 (N,), sample ids unique over the whole bundle

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def streamed(self) -> bool:
        return not isinstance(self.x, Tensor)

    def take(self, positions: Tensor) -> "Split":
        """The split's rows at ``positions`` (a streamed split stays on disk)."""
        x = self.x.take(positions) if self.streamed else self.x[positions]
        return Split(x, self.y[positions], self.index[positions])


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
    #: identifies the images themselves where the spec alone does not (an image folder's files); "" otherwise
    fingerprint: str = ""
    #: what loading found and decided (layout, decoding, streaming, normalisation), for the run's events
    notes: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def streamed(self) -> bool:
        """True when the splits are read from disk batch by batch instead of held in memory."""
        return self.train.streamed


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


def plan_splits(spec: DatasetSpec, y: Tensor, n_train: int, n_val: int = 0, n_test: int = 0
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of (train, val, test) in a source of n_train training rows, then n_val val rows, then n_test test rows.

    A split without rows of its own is carved from the training rows, stratified, seeded by
    ``spec.split_seed`` alone: test first (``test_fraction``), then val (``val_fraction``).
    Rows are the sample ids: stable for a given source. ``y`` labels at least the training rows.
    """
    gen = torch.Generator().manual_seed(spec.split_seed)
    pool = torch.arange(n_train)
    if n_test:
        test = torch.arange(n_test) + n_train + n_val
    else:
        pool, test = _carve(pool, y, spec.test_fraction, gen)
    if n_val:
        val = torch.arange(n_val) + n_train
    else:
        pool, val = _carve(pool, y, spec.val_fraction, gen)
    if spec.train_size is not None:
        pool = pool[: spec.train_size]  # the carve order is stratified, so a prefix is too
    return pool, val, test


def normalization(spec: DatasetSpec, channels: int, dataset_stats: Callable[[], tuple[Tensor, Tensor]]
                  ) -> tuple[Tensor, Tensor]:
    """(mean, std) per channel, float32, in [0, 1] pixel units, as ``spec.normalize`` asks.

    ``dataset_stats`` computes the train split's statistics; it is only called for "dataset".
    """
    setting = spec.normalize
    if setting == "dataset":
        return dataset_stats()
    if setting == "none":
        return torch.zeros(channels), torch.ones(channels)
    what, mean, std = ("imagenet", IMAGENET_MEAN, IMAGENET_STD) if setting == "imagenet" else \
        ("the given mean/std", tuple(setting.mean), tuple(setting.std))
    if len(mean) != channels:
        raise DatasetError(f"dataset.normalize: {what} has {len(mean)} value(s) per statistic but {spec.name} "
                           f"images have {channels} channel(s); give one mean and one std per channel")
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def normalize_pixels(x: Tensor, pixel_max: float, mean: Tensor, std: Tensor) -> Tensor:
    """Raw pixels -> float32 normalised images; elementwise, so any batch of rows gives the same values.

    In place on one float copy: a streamed batch costs one float tensor, not four temporaries."""
    x = x.to(torch.float32, copy=True)
    return x.div_(pixel_max).sub_(mean[:, None, None]).div_(std[:, None, None])


def describe_normalization(spec: DatasetSpec, mean: Tensor, std: Tensor) -> str:
    how = {"dataset": "the train split's statistics", "imagenet": "ImageNet's", "none": "none"}.get(
        spec.normalize if isinstance(spec.normalize, str) else "", "explicit values")
    values = lambda t: ", ".join(f"{v:.4f}" for v in t.tolist())  # noqa: E731
    return f"normalisation: {how} (mean {values(mean)}; std {values(std)})"


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
    if spec.stream == "on":
        raise DatasetError(f"dataset.stream: {name} is decoded into memory whole; only image_folder can stream "
                           f"from disk (set stream: auto or off)")
    n_train = len(train.y)
    train_pos, val_pos, test_ids = plan_splits(spec, train.y, n_train, 0, 0 if test is None else len(test.y))
    if test is None:
        test_x, test_y = train.x[test_ids], train.y[test_ids]
    else:
        test_x, test_y = test.x, test.y

    size = spec.image_size or int(train.x.shape[-1])
    train_x = _prepare(train.x[train_pos], pixel_max, size)
    mean, std = normalization(spec, int(train.x.shape[1]), lambda: _channel_stats(train_x))

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
        notes=[describe_normalization(spec, mean, std)],
    )
