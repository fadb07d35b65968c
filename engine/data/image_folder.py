"""Any folder of class subfolders holding images (the torchvision ImageFolder layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from engine.data import DATASETS
from engine.data.bundle import DataBundle, DatasetError, RawSet, make_bundle
from engine.spec import DatasetSpec

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_SIZE = 32


def _class_files(root: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every subfolder that holds at least one image."""
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if files:
            classes[folder.name] = files
    return classes


def _read_image(path: Path, size: int) -> torch.Tensor:
    """One image as float (3, size, size) in [0, 255]; sizes differ per file, so resize here."""
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"image_folder: cannot read image {path} ({err})") from err
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _find_classes(spec: DatasetSpec) -> dict[str, list[Path]]:
    if not spec.root:
        raise DatasetError("image_folder: dataset.root is required (a folder with one subfolder per class)")
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image_folder: folder {root} does not exist")
    classes = _class_files(root)
    if not classes:
        exts = ", ".join(sorted(EXTENSIONS))
        raise DatasetError(f"image_folder: {root} has no class subfolders with images ({exts})")
    return classes


def image_folder_signature(spec: DatasetSpec) -> tuple[tuple[int, int, int], int]:
    """Input shape and class count without reading any image."""
    size = spec.image_size or DEFAULT_SIZE
    return (3, size, size), len(_find_classes(spec))


@DATASETS.register("image_folder", "a folder of class subfolders with images (root required; RGB, resized)",
                   signature=image_folder_signature)
def load_image_folder(spec: DatasetSpec) -> DataBundle:
    classes = _find_classes(spec)
    size = spec.image_size or DEFAULT_SIZE
    images, labels = [], []
    for label, files in enumerate(classes.values()):
        images += [_read_image(f, size) for f in files]
        labels += [label] * len(files)
    raw = RawSet(torch.stack(images), torch.tensor(labels, dtype=torch.long))
    return make_bundle("image_folder", list(classes), spec, raw, None, pixel_max=255.0)
