"""Sample pictures for the galleries: stored sample id -> the image the model saw, in [0, 1].

Telemetry records sample ids only; the pictures come from loading the run's dataset in the
page. Bundles hold normalised float tensors; here they become uint8 once (a quarter of the
memory, kept by the page cache) and are looked up by id across all three splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data.bundle import DataBundle

MIN_SIDE_PX = 64  # tiny images (digits are 8x8) are enlarged with square pixels, not blurred
CHUNK = 4096


@dataclass(frozen=True)
class SampleImages:
    ids: np.ndarray  # (N,) sorted sample ids
    pixels: np.ndarray  # (N, H, W, C) uint8, row i is sample ids[i]
    class_names: list[str]  # label -> the dataset's name for it

    @classmethod
    def from_bundle(cls, bundle: DataBundle) -> "SampleImages":
        mean = torch.tensor(bundle.mean)[:, None, None]
        std = torch.tensor(bundle.std)[:, None, None]
        ids, pixels = [], []
        for split in (bundle.train, bundle.val, bundle.test):
            for start in range(0, len(split), CHUNK):
                x = split.x[start:start + CHUNK]
                raw = (x * std + mean).clamp(0.0, 1.0)  # undo the normalisation: x_raw = x * std + mean
                pixels.append((raw * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            ids.append(split.index.numpy())
        all_ids = np.concatenate(ids)
        order = np.argsort(all_ids, kind="stable")
        return cls(all_ids[order], np.concatenate(pixels)[order], list(bundle.class_names))

    def image(self, sample_id: int) -> np.ndarray | None:
        """(H, W) or (H, W, 3) floats in [0, 1], enlarged to at least MIN_SIDE_PX; None for an unknown id."""
        pos = int(np.searchsorted(self.ids, sample_id))
        if pos >= len(self.ids) or self.ids[pos] != sample_id:
            return None
        picture = self.pixels[pos].astype(np.float32) / 255.0
        scale = max(1, -(-MIN_SIDE_PX // picture.shape[0]))
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
        return picture[..., 0] if picture.shape[-1] == 1 else picture
