"""Teacher-output cache: frozen teachers' taps computed once per (view, sample) and reused.

A teacher never changes during distillation, so its outputs for a given image never do
either. They are computed once, written as one .npy file per spot under
<workspace>/cache/<teacher fingerprint>-<data fingerprint>/ and read back by position and
view: a distillation step then costs about what the student's own step costs.

The folder name is the key: it changes with the teacher's weights (a new checkpoint), the
data (dataset, split, size, normalisation, and for an image folder its files' paths, sizes and
modification times: ``DataBundle.fingerprint``) and the augmentation (mode, number of views,
their seed), so a stale cache is never read. Runs with the same teacher and data share it,
across processes. A streamed dataset's cache is always read memory-mapped.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from engine.spec import DatasetSpec
from engine.workspace import cache_dir

BUILD_BATCH = 256
IN_MEMORY_LIMIT = 1 << 30  # bytes; larger caches stay memory-mapped and are read batch by batch
#: data fields that decide which images the train split holds (batch size and download do not)
DATA_FIELDS = ("name", "root", "val_fraction", "test_fraction", "train_size", "image_size", "split_seed", "normalize")


def teacher_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(dataset: DatasetSpec, views: int, view_seed: int, fp16: bool, content: str = "") -> str:
    """``content``: what identifies the images beyond the spec (``DataBundle.fingerprint``: an image folder's files)."""
    dumped = dataset.model_dump(mode="json")
    fields = {name: dumped[name] for name in DATA_FIELDS}
    augmented = dataset.augment != "none"
    fields.update(augment=dataset.augment, views=views if augmented else 1, view_seed=view_seed if augmented else 0,
                  fp16=fp16)
    if content:
        fields["content"] = content
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class CachedTaps:
    """One teacher's cached spots: each an array (views, N, *shape) on disk or in memory."""

    def __init__(self, arrays: dict[str, np.ndarray | Tensor]) -> None:
        self.arrays = arrays

    def lookup(self, position: Tensor, view: Tensor, device: torch.device) -> dict[str, Tensor]:
        taps = {}
        for spot, array in self.arrays.items():
            if isinstance(array, Tensor):
                rows = array[view, position]
            else:  # memory-mapped: numpy reads only these rows from disk
                rows = torch.from_numpy(np.ascontiguousarray(array[view.numpy(), position.numpy()]))
            taps[spot] = rows.to(device, dtype=torch.float32, non_blocking=True)
        return taps


def cache_folder(home: Path, model: nn.Module, dataset: DatasetSpec, views: int, view_seed: int, fp16: bool,
                 content: str = "") -> Path:
    data = data_fingerprint(dataset, views, view_seed, fp16, content)
    return cache_dir(home) / f"{teacher_fingerprint(model)}-{data}"


def load_or_build(folder: Path, spots: list[str], forward: Callable[[Tensor], dict[str, Tensor]], images: Tensor,
                  fp16: bool, device: torch.device, progress: Callable[[float], None], in_memory: bool = True
                  ) -> tuple[CachedTaps, list[str]]:
    """The cached taps of `spots` (building the missing ones from `images` (views, N, C, H, W)); also which were built.

    ``images`` may be any object with that ``shape`` answering ``images[view, a:b]`` (a streamed
    split's stand-in); ``in_memory=False`` keeps the taps memory-mapped whatever their size."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [spot for spot in spots if not _done(folder, spot)]
    if missing:
        _build(folder, missing, forward, images, np.float16 if fp16 else np.float32, device, progress)
    arrays = {spot: np.load(_file(folder, spot), mmap_mode="r") for spot in spots}
    if in_memory and sum(a.nbytes for a in arrays.values()) <= IN_MEMORY_LIMIT:
        arrays = {spot: torch.from_numpy(np.array(a)) for spot, a in arrays.items()}
    return CachedTaps(arrays), missing


def _file(folder: Path, spot: str) -> Path:
    return folder / f"{spot}.npy"


def _done(folder: Path, spot: str) -> bool:
    # The marker is written after the array is complete: a half-built file (a killed worker) is rebuilt.
    return (folder / f"{spot}.done").exists() and _file(folder, spot).exists()


@torch.no_grad()
def _build(folder: Path, spots: list[str], forward: Callable[[Tensor], dict[str, Tensor]], images: Tensor,
           dtype: type, device: torch.device, progress: Callable[[float], None]) -> None:
    views, count = images.shape[:2]
    outputs: dict[str, np.memmap] = {}
    total, done = views * count, 0
    for v in range(views):
        for start in range(0, count, BUILD_BATCH):
            taps = forward(images[v, start:start + BUILD_BATCH].to(device))
            for spot in spots:
                rows = taps[spot].float().cpu().numpy()
                if spot not in outputs:
                    outputs[spot] = np.lib.format.open_memmap(
                        _partial(folder, spot), mode="w+", dtype=dtype, shape=(views, count, *rows.shape[1:]))
                outputs[spot][v, start:start + len(rows)] = rows
            done += len(rows)
            progress(done / total)
    for spot, array in outputs.items():
        array.flush()
        os.replace(_partial(folder, spot), _file(folder, spot))
        (folder / f"{spot}.done").write_text("ok")


def _partial(folder: Path, spot: str) -> Path:
    return folder / f"{spot}.{os.getpid()}.partial.npy"
