"""CIFAR-10, CIFAR-100 and SVHN through torchvision; downloads only when the spec allows it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.data.registry import DATASETS
from engine.data.bundle import DataBundle, DatasetError, RawSet, make_bundle
from engine.spec import DatasetSpec

CACHE = Path.home() / ".cache" / "pathscope"


def _open(name: str, spec: DatasetSpec, layout: str, make: Callable[[str, bool], Any]) -> tuple[Any, Any]:
    """Open the train and test sets, turning torchvision's errors into a DatasetError."""
    root = Path(spec.root).expanduser() if spec.root else CACHE / name
    try:
        return make(str(root), True), make(str(root), False)
    except (RuntimeError, OSError) as err:
        how = "download failed" if spec.download else "set dataset.download: true to fetch them"
        raise DatasetError(f"{name}: cannot load from {root} (expected {layout}); {how}. ({err})") from err


def _hwc(data: np.ndarray, labels: Any) -> RawSet:
    """torchvision's CIFAR arrays are (N, H, W, C) uint8."""
    return RawSet(torch.from_numpy(data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(labels, dtype=torch.long))


def _load_cifar(spec: DatasetSpec, name: str, class_name: str, layout: str) -> DataBundle:
    import torchvision.datasets  # here, not at the top: importing torchvision takes seconds

    def make(root: str, train: bool) -> Any:
        return getattr(torchvision.datasets, class_name)(root, train=train, download=spec.download)

    train, test = _open(name, spec, layout, make)
    return make_bundle(
        name, list(train.classes), spec, _hwc(train.data, train.targets), _hwc(test.data, test.targets), 255.0
    )


@DATASETS.register("cifar10", "CIFAR-10 through torchvision (32x32 colour, 60,000 images, 10 classes)",
                   shape=(3, 32, 32), classes=10)
def load_cifar10(spec: DatasetSpec) -> DataBundle:
    layout = "<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"
    return _load_cifar(spec, "cifar10", "CIFAR10", layout)


@DATASETS.register("cifar100", "CIFAR-100 through torchvision (32x32 colour, 60,000 images, 100 classes)",
                   shape=(3, 32, 32), classes=100)
def load_cifar100(spec: DatasetSpec) -> DataBundle:
    layout = "<root>/cifar-100-python/{train, test, meta}"
    return _load_cifar(spec, "cifar100", "CIFAR100", layout)


@DATASETS.register("svhn", "SVHN street-view digits through torchvision (32x32 colour, 99,289 images)",
                   shape=(3, 32, 32), classes=10)
def load_svhn(spec: DatasetSpec) -> DataBundle:
    import torchvision.datasets  # here, not at the top: importing torchvision takes seconds

    def make(root: str, train: bool) -> Any:
        return torchvision.datasets.SVHN(root, split="train" if train else "test", download=spec.download)

    train, test = _open("svhn", spec, "<root>/{train_32x32.mat, test_32x32.mat}", make)

    def raw(ds: Any) -> RawSet:  # SVHN arrays are already (N, C, H, W)
        return RawSet(torch.from_numpy(ds.data), torch.as_tensor(ds.labels, dtype=torch.long))

    return make_bundle("svhn", [str(d) for d in range(10)], spec, raw(train), raw(test), 255.0)
