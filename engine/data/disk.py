"""Decoded images on disk: a uint8 (N, C, H, W) file read row by row with pread.

``DiskImages`` stands in for ``Split.x`` when a split streams from disk. It supports the
indexing the engine uses on an image tensor (``x[positions]``, ``x[a:b]``, ``x[i]``, ``len``,
``.shape``, ``-x``) and returns normalised float32 tensors computed exactly as the in-memory
path computes them (``bundle.normalize_pixels``), so a streamed run equals an in-memory one.
Rows are read with ``os.preadv`` into fresh buffers, never memory-mapped: resident memory
stays at about one batch, whatever the file's size.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.data.bundle import DatasetError, normalize_pixels

PIXEL_MAX = 255.0
STATS_CHUNK_BYTES = 4 << 20  # uint8 bytes read at a time when computing statistics or loading a split


class DiskImages:
    """Rows ``rows`` of the uint8 file ``path`` of images shaped ``item_shape``, normalised by mean/std on access."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, path: Path, item_shape: tuple[int, int, int], rows: Tensor, mean: Tensor, std: Tensor,
                 sign: float = 1.0, workers: int = 0) -> None:
        self.path = Path(path)
        self.item_shape = tuple(int(d) for d in item_shape)
        self.rows = rows.long().cpu()
        self.mean, self.std = mean.float(), std.float()
        self.sign = sign  # -1: the negated images (a planted inverted_input teacher trains on them)
        self.workers = workers  # DataLoader worker processes for training batches (engine/data/stream.py)
        self.row_bytes = int(np.prod(self.item_shape))
        self._fd: int | None = None
        self._fd_pid = 0

    # ---------------------------------------------------------------- what a tensor of images answers
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.item_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return 1 + len(self.item_shape)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def __getitem__(self, key) -> Tensor:
        if isinstance(key, (int, np.integer)):
            return self[torch.tensor([int(key)])][0]
        if isinstance(key, tuple):
            raise TypeError("a streamed split is indexed by sample positions only (x[positions], x[a:b], x[i])")
        if isinstance(key, Tensor):
            key = key.cpu()
        return self.read(self.rows[key])

    def __neg__(self) -> "DiskImages":
        return self._with(self.rows, -self.sign)

    def take(self, positions: Tensor) -> "DiskImages":
        """The rows at ``positions``, still on disk."""
        return self._with(self.rows[positions.cpu()], self.sign)

    def _with(self, rows: Tensor, sign: float) -> "DiskImages":
        return DiskImages(self.path, self.item_shape, rows, self.mean, self.std, sign, self.workers)

    def __repr__(self) -> str:
        return f"DiskImages({self.path}, {tuple(self.shape)})"

    # ---------------------------------------------------------------- reading
    def read(self, rows: Tensor) -> Tensor:
        """Normalised float32 images of file rows ``rows``."""
        pixels = torch.from_numpy(self.read_u8(rows.numpy()))
        x = normalize_pixels(pixels, PIXEL_MAX, self.mean, self.std)
        return -x if self.sign < 0 else x

    def read_u8(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C, H, W) uint8 of file rows ``rows``; runs of consecutive rows are read at once."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.row_bytes), np.uint8)
        if len(rows):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])
            fd = self._descriptor()
            for start, end in zip(starts.tolist(), ends.tolist()):
                self._pread(fd, memoryview(out[start:end]).cast("B"), int(rows[start]) * self.row_bytes)
        return out.reshape(len(rows), *self.item_shape)

    def _pread(self, fd: int, buffer: memoryview, offset: int) -> None:
        done = 0
        while done < len(buffer):
            got = os.preadv(fd, [buffer[done:]], offset + done)
            if got <= 0:
                raise DatasetError(f"decoded image cache {self.path} is shorter than expected (changed while "
                                   f"in use?); delete it to decode the images again")
            done += got

    def _descriptor(self) -> int:
        # One descriptor per process: DataLoader workers (forked or spawned) open their own.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_fd_pid": 0}

    def __del__(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    # ---------------------------------------------------------------- whole-split work, a chunk at a time
    def chunks(self) -> list[slice]:
        """Positions 0..N-1 as consecutive slices of about STATS_CHUNK_BYTES of pixels each."""
        step = max(1, STATS_CHUNK_BYTES // self.row_bytes)
        return [slice(start, start + step) for start in range(0, len(self), step)]

    def load(self) -> Tensor:
        """The whole split as one float32 tensor (the in-memory path), filled a chunk at a time."""
        x = torch.empty(self.shape, dtype=torch.float32)
        for positions in self.chunks():
            x[positions] = self[positions]
        return x

    def channel_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and (unbiased) std in [0, 1] pixel units, exact, from per-channel histograms."""
        channels = self.item_shape[0]
        counts = np.zeros((channels, 256), np.int64)
        for positions in self.chunks():
            pixels = self.read_u8(self.rows[positions].numpy())
            for c in range(channels):
                counts[c] += np.bincount(pixels[:, c].reshape(-1), minlength=256)
        values = np.arange(256, dtype=np.float64) / PIXEL_MAX
        n = counts.sum(1)
        mean = (counts * values).sum(1) / np.maximum(n, 1)
        var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(1) / np.maximum(n - 1, 1)
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(np.sqrt(var), dtype=torch.float32).clamp_min(1e-6)
