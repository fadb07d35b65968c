"""The model work behind the Learn page: read a saved teacher file, pick one sample per class, run the teacher.

The page caches what these return and draws it; it imports no torch itself. Teacher files are the
ones runs save under ``workspace/teachers/`` (a dict with "arch", "state_dict" and "test_acc"),
read as data (weights_only). One forward pass over ten digits takes milliseconds on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.data import dataset_signature, load_dataset
from engine.models import build_model
from engine.spec import DatasetSpec


@dataclass(frozen=True)
class LessonSamples:
    x: np.ndarray  # (N, C, H, W) normalised, as the teacher sees them
    labels: np.ndarray  # (N,)
    ids: np.ndarray  # (N,) sample ids
    images: np.ndarray  # (N, H, W) de-normalised to [0, 1]
    class_names: list[str]


def teacher_file_header(path: str | Path) -> tuple[str, float | None]:
    """(architecture, test accuracy) saved in a teacher file."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return str(saved["arch"]), saved.get("test_acc")


def lesson_samples(dataset: DatasetSpec) -> LessonSamples:
    """The first test sample of each class, in the split and normalisation the teacher was trained with."""
    bundle = load_dataset(dataset)
    labels = bundle.test.y.numpy()
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(bundle.num_classes) if (labels == c).any()]
    x = bundle.test.x[picks]
    raw = x * torch.tensor(bundle.std)[:, None, None] + torch.tensor(bundle.mean)[:, None, None]  # undo normalising
    return LessonSamples(x=x.numpy(), labels=labels[picks], ids=bundle.test.index[picks].numpy(),
                         images=raw.clamp(0, 1)[:, 0].numpy(), class_names=bundle.class_names)


def teacher_logits(path: str | Path, arch: str, arch_params: dict[str, Any], dataset: DatasetSpec,
                   x: np.ndarray) -> np.ndarray:
    """One forward pass of the saved teacher over ``x``: logits (N, classes)."""
    (channels, size, _), classes = dataset_signature(dataset)
    model = build_model(arch, classes, channels, size, arch_params)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()
