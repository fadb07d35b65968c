"""Datasets: every loader turns a DatasetSpec into a DataBundle of normalised tensors."""
from __future__ import annotations

from engine.registry import Registry
from engine.spec import DatasetSpec

from engine.data.bundle import DataBundle, DatasetError, Split, iterate_batches

DATASETS: Registry = Registry("dataset")

# Imported for their registration side effect; they need DATASETS defined above.
from engine.data import digits, idx, image_folder, torchvision_sets  # noqa: E402,F401


def dataset_signature(spec: DatasetSpec) -> tuple[tuple[int, int, int], int]:
    """(input shape C,H,W, number of classes) without loading the data, for validation.

    Registrations give ``shape`` and ``classes``, or a ``signature`` function of the spec
    when they depend on the files (image_folder).
    """
    meta = DATASETS.entry(spec.name).meta
    if "signature" in meta:
        return meta["signature"](spec)
    channels, height, width = meta["shape"]
    if spec.image_size:
        height = width = spec.image_size
    return (channels, height, width), meta["classes"]


def load_dataset(spec: DatasetSpec) -> DataBundle:
    """Build the bundle for ``spec``; unknown names raise UnknownName listing the known ones."""
    return DATASETS.get(spec.name)(spec)


__all__ = ["DATASETS", "DataBundle", "DatasetError", "Split", "dataset_signature", "iterate_batches", "load_dataset"]
