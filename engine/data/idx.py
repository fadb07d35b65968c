"""MNIST-style IDX files (raw or gzip): ``mnist`` and ``fashion_mnist``.

Files are parsed from their header, never checksummed: Debian's dataset-fashion-mnist
recompresses the gzip files, so their hashes differ from the upstream ones.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from engine.data.registry import DATASETS
from engine.data.bundle import DataBundle, DatasetError, RawSet, make_bundle
from engine.spec import DatasetSpec

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CACHE = Path.home() / ".cache" / "pathscope"
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# IDX type codes (third header byte) -> big-endian numpy dtypes.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip detected by its magic bytes, not its name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad header)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DatasetError(f"{path}: header says {dims} but the file holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_folder(candidates: list[Path]) -> Path | None:
    """The first candidate folder holding all four files (raw or .gz)."""
    for folder in candidates:
        if all(_find(folder, stem) for stem in FILES.values()):
            return folder
    return None


def _load_folder(folder: Path) -> tuple[RawSet, RawSet]:
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in FILES.items()}  # type: ignore[arg-type]

    def raw(x: np.ndarray, y: np.ndarray) -> RawSet:
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{folder}: images {x.shape} and labels {y.shape} do not match")
        return RawSet(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))

    return raw(arrays["train_x"], arrays["train_y"]), raw(arrays["test_x"], arrays["test_y"])


def _missing_message(name: str, folder: Path, hint: str) -> str:
    files = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
    return f"{name}: no IDX files in {folder} (expected {files}). {hint}"


def _download(name: str, tv_name: str, root: Path) -> None:
    # Imported here: torchvision takes seconds to import and is only needed to download.
    import torchvision.datasets

    tv_class = getattr(torchvision.datasets, tv_name)
    try:
        for train in (True, False):
            tv_class(str(root), train=train, download=True)
    except (RuntimeError, OSError) as err:
        raise DatasetError(f"{name}: download into {root} failed: {err}") from err


def _load_idx_dataset(
    spec: DatasetSpec, name: str, default_root: Path, tv_name: str, hint: str, classes: list[str]
) -> DataBundle:
    root = Path(spec.root).expanduser() if spec.root else default_root
    download_root = Path(spec.root).expanduser() if spec.root else CACHE / name
    # tv_name is the torchvision class, which keeps its downloads in <root>/<tv_name>/raw.
    candidates = [root, root / tv_name / "raw", download_root / tv_name / "raw"]
    folder = _idx_folder(candidates)
    if folder is None and spec.download:
        _download(name, tv_name, download_root)
        folder = _idx_folder(candidates)
    if folder is None:
        raise DatasetError(_missing_message(name, root, hint))
    train, test = _load_folder(folder)
    return make_bundle(name, classes, spec, train, test, pixel_max=255.0)


@DATASETS.register("fashion_mnist", "Fashion-MNIST from local IDX files (28x28 grey, 70,000 images)",
                   shape=(1, 28, 28), classes=10)
def load_fashion_mnist(spec: DatasetSpec) -> DataBundle:
    hint = (
        "Install them with `apt-get install dataset-fashion-mnist`, point dataset.root at a folder "
        "holding them, or set dataset.download: true."
    )
    return _load_idx_dataset(
        spec, "fashion_mnist", Path("/usr/share/datasets/fashion-mnist"),
        "FashionMNIST", hint, FASHION_CLASSES,
    )


@DATASETS.register("mnist", "MNIST handwritten digits from IDX files (28x28 grey, 70,000 images)",
                   shape=(1, 28, 28), classes=10)
def load_mnist(spec: DatasetSpec) -> DataBundle:
    hint = "Point dataset.root at a folder holding them, or set dataset.download: true."
    return _load_idx_dataset(
        spec, "mnist", CACHE / "mnist", "MNIST", hint, [str(d) for d in range(10)],
    )
