"""Planted-defect teachers: deliberately broken teachers for teaching and for proving the detector.

Each defect changes only what an inline teacher is trained on (never the student's data):
- permuted_labels: trained on a fixed permutation of the classes (no class keeps its label);
- noisy_labels: a share `noise` of the training labels replaced by another class;
- inverted_input: trained on negated images, then asked about normal ones;
- under_trained: one epoch over a tenth of the training split;
- random_init: not trained at all.
"""
from __future__ import annotations

import dataclasses

import torch

from engine.data.bundle import DataBundle, Split

DEFECTS = ("none", "permuted_labels", "noisy_labels", "inverted_input", "under_trained", "random_init")
UNDER_TRAINED_SHARE = 0.1


def derangement(num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the classes with no fixed point (every class gets another's label)."""
    while True:
        perm = torch.randperm(num_classes, generator=generator)
        if num_classes < 2 or not (perm == torch.arange(num_classes)).any():
            return perm


def _flip_labels(y: torch.Tensor, share: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(y), generator=generator) < share
    offset = torch.randint(1, num_classes, (len(y),), generator=generator)  # never the true class
    return torch.where(flip, (y + offset) % num_classes, y)


def defective_train_split(bundle: DataBundle, defect: str, noise: float, seed: int) -> Split:
    """The training split an inline teacher with this defect learns from."""
    train = bundle.train
    generator = torch.Generator().manual_seed(seed * 31 + DEFECTS.index(defect))
    if defect == "permuted_labels":
        return dataclasses.replace(train, y=derangement(bundle.num_classes, generator)[train.y])
    if defect == "noisy_labels":
        return dataclasses.replace(train, y=_flip_labels(train.y, noise, bundle.num_classes, generator))
    if defect == "inverted_input":
        return dataclasses.replace(train, x=-train.x)
    if defect == "under_trained":
        keep = torch.randperm(len(train), generator=generator)[: max(1, int(len(train) * UNDER_TRAINED_SHARE))]
        return train.take(keep)  # a streamed split stays on disk
    return train
