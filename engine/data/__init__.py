"""Datasets: every loader turns a DatasetSpec into a DataBundle of normalised tensors."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from engine.spec import DatasetSpec

from engine.data.bundle import DataBundle, DatasetError, Split, iterate_batches, normalization
from engine.data.registry import DATASETS

# Imported for their registration side effect: each registers its loader in engine/data/registry.py.
from engine.data import digits, idx, image_folder, torchvision_sets  # noqa: F401


def dataset_signature(spec: DatasetSpec) -> tuple[tuple[int, int, int], int]:
    """(input shape C,H,W, number of classes) without loading the data, for validation.

    Registrations give ``shape`` and ``classes``, or a ``signature`` function of the spec
    when they depend on the files (image_folder).
    """
    meta = DATASETS.entry(spec.name).meta
    _check_stream(spec, meta)
    if "signature" in meta:
        shape, classes = meta["signature"](spec)
    else:
        channels, height, width = meta["shape"]
        if spec.image_size:
            height = width = spec.image_size
        shape, classes = (channels, height, width), meta["classes"]
    if spec.normalize != "dataset":  # explicit values must have one per channel (raises naming dataset.normalize)
        normalization(spec, shape[0], lambda: None)
    return shape, classes


def _check_stream(spec: DatasetSpec, meta: dict) -> None:
    if spec.stream == "on" and not meta.get("streams"):
        streaming = ", ".join(e.name for e in DATASETS if e.meta.get("streams"))
        raise DatasetError(f"dataset.stream: {spec.name} is decoded into memory whole; only {streaming} can "
                           f"stream from disk (set stream: auto or off)")


def load_dataset(spec: DatasetSpec, cache_root: Path | None = None,
                 report: Callable[[str], None] | None = None) -> DataBundle:
    """Build the bundle for ``spec``; unknown names raise UnknownName listing the known ones.

    ``cache_root``: where datasets decoded from files (image_folder) keep their decoded pixels
    (the runner passes ``<workspace>/cache``; None: the workspace of PATHSCOPE_HOME, or a
    temporary folder). ``report`` receives one sentence per finding or decision (layout,
    decoding, streaming, normalisation); they are also kept in ``bundle.notes``.
    """
    loader = DATASETS.get(spec.name)
    meta = DATASETS.entry(spec.name).meta
    _check_stream(spec, meta)
    if meta.get("disk_cache"):
        return loader(spec, cache_root=cache_root, report=report)
    bundle = loader(spec)
    if report is not None:
        for note in bundle.notes:
            report(note)
    return bundle


__all__ = ["DATASETS", "DataBundle", "DatasetError", "Split", "dataset_signature", "iterate_batches", "load_dataset"]
