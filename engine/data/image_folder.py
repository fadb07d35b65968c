"""Folders of images as users lay them out (torchvision's ImageFolder layout).

Two layouts of ``dataset.root`` are understood:
- splits: ``root/train/<class>/...`` with optional ``root/val/`` (or ``valid/``, ``validation/``) and
  ``root/test/`` holding the same class folders; a missing val or test split is drawn from train
  with the spec's seeded fraction;
- classes: ``root/<class>/...``; val and test are both drawn from it.
``scan_image_folder`` finds the layout without opening an image; ``describe_image_folder``
says in a sentence what was found (for the Configure page and the run's events).

Images are decoded once, with a thread pool, into a uint8 file at the target size (resize of the
shorter side + centre crop) under ``<cache root>/images/<key>/``, the key made of the files' paths,
sizes and modification times and the size: a second run reads that file instead of decoding
again. Small datasets are then held in memory as float tensors; larger ones (``dataset.stream``,
``dataset.memory_limit_mb``) stay on disk and stream batch by batch (disk.DiskImages).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, NoReturn

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.data.registry import DATASETS
from engine.data.bundle import DataBundle, DatasetError, Split, describe_normalization, normalization, plan_splits
from engine.data.disk import DiskImages
from engine.spec import DatasetSpec
from engine.workspace import cache_dir, workspace_home

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_SIZE = 32  # when the images do not all share one square size and dataset.image_size is not set
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
CACHE_VERSION = 1  # bump when decoding changes, so cached pixels are decoded again
DECODE_CHUNK = 64  # images per decoding task (one pwrite each)
CHANNELS = 3

Report = Callable[[str], None]


@dataclass
class FolderLayout:
    """What ``dataset.root`` holds, found without opening an image."""

    root: Path
    kind: str  # "splits": train/ (val/, test/) under root; "classes": root's subfolders are the classes
    class_names: list[str]
    folders: dict[str, Path]  # split name -> its folder, for the splits that have one
    files: dict[str, list[str]] = field(repr=False)  # split name -> image paths, in label then name order
    labels: dict[str, list[int]] = field(repr=False)

    def count(self, split: str) -> int:
        return len(self.files.get(split, ()))

    def all_files(self) -> list[str]:
        """Every image, train first, then val, then test: the rows of the decoded file, and the sample ids."""
        return [f for split in ("train", "val", "test") for f in self.files.get(split, ())]

    def describe(self, val_fraction: float, test_fraction: float) -> str:
        names = ", ".join(self.class_names[:12]) + (", ..." if len(self.class_names) > 12 else "")
        classes = f"{len(self.class_names)} classes: {names}"
        drawn = [] if "test" in self.folders else [f"test ({test_fraction:.0%})"]
        if "val" not in self.folders:
            rest = " of the rest" if drawn else ""
            drawn.append(f"val ({val_fraction:.0%}{rest})" if val_fraction else "no val split (val_fraction 0)")
        if self.kind == "classes":
            text = (f"image_folder: {self.root} holds {len(self.class_names)} class folders "
                    f"({self.count('train'):,} images; {classes}); drawn from them: {', then '.join(drawn)}")
            parent_test = _split_folder(self.root.parent, "test")
            if self.root.name.lower() in SPLIT_FOLDERS["train"] and parent_test is not None:
                text += (f". {self.root} looks like the train split of {self.root.parent}, which also has "
                         f"{parent_test.name}/: point dataset.root at {self.root.parent} to test on "
                         f"{parent_test.name}/ (a public model trained on train/ would otherwise be tested on its "
                         f"own training images)")
            return text
        found = [f"{self.folders[s].name}/ ({self.count(s):,} images)" for s in ("train", "val", "test")
                 if s in self.folders]
        return (f"image_folder: {' and '.join(found)} found under {self.root}, {classes}"
                + (f"; drawn from train: {', then '.join(drawn)}" if drawn else ""))


def _split_folder(root: Path, split: str) -> Path | None:
    try:
        entries = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    except OSError:
        return None
    return next((entries[n] for n in SPLIT_FOLDERS[split] if n in entries), None)


def _unreadable(folder: Path | str, err: OSError) -> DatasetError:
    return DatasetError(f"image_folder: cannot read folder {folder} ({err.strerror or err}); give this user read "
                        f"access to it (chmod -R a+rX) or move it out of dataset.root")


def _subfolders(folder: Path) -> list[Path]:
    """The folder's subfolders; DatasetError naming it when it cannot be listed (never silently none)."""
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError as err:
        raise _unreadable(folder, err) from None


def _raise_unreadable(err: OSError) -> NoReturn:
    # os.walk skips a folder it cannot list unless told otherwise: a class would silently lose its images
    raise _unreadable(err.filename, err)


def _images_in(folder: Path) -> list[str]:
    """Every image under a class folder (recursively; hidden files and folders ignored), sorted.

    Any other file is an error naming it: a stray file would otherwise be silently dropped or
    fail later, far from its cause."""
    found = []
    for here, dirs, files in os.walk(folder, onerror=_raise_unreadable, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(here, name)
            if os.path.splitext(name)[1].lower() not in EXTENSIONS:
                raise DatasetError(f"image_folder: {path} is not an image (known extensions: "
                                   f"{', '.join(sorted(EXTENSIONS))}); move it out of the class folder {folder}")
            found.append(path)
    return sorted(found)


def _scan_classes(folder: Path) -> dict[str, list[str]]:
    """Class name -> image files, for every (non-hidden) subfolder of ``folder``."""
    classes = {}
    for sub in sorted(p for p in _subfolders(folder) if not p.name.startswith(".")):
        files = _images_in(sub)
        if not files:
            raise DatasetError(f"image_folder: class folder {sub} is empty (no images); add images or remove it")
        classes[sub.name] = files
    if not classes:
        raise DatasetError(f"image_folder: {folder} has no class subfolders with images "
                           f"({', '.join(sorted(EXTENSIONS))}); expected {folder}/<class>/<image> "
                           f"or {folder}/train/<class>/<image>")
    return classes


def _two_classes(classes: dict[str, list[str]], folder: Path) -> dict[str, list[str]]:
    # one class trains to 100% accuracy and means nothing: most likely dataset.root points one level too deep
    if len(classes) < 2:
        name = next(iter(classes))
        raise DatasetError(f"image_folder: {folder} holds one class folder ({name}/); a classifier needs at least "
                           f"2 classes: point dataset.root at the folder that holds all class folders")
    return classes


def scan_image_folder(root: str | Path | None) -> FolderLayout:
    """The layout of ``root`` (see the module's docstring); DatasetError naming the folder or file when it is wrong."""
    if not root:
        raise DatasetError("image_folder: dataset.root is required (a folder with one subfolder per class, "
                           "or with train/ and test/ folders of them)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image_folder: folder {root} does not exist")
    return _scan(root, _folder_stamp(root))


def _folder_stamp(root: Path) -> tuple[tuple[str, int], ...]:
    """Modification times of the root, its subfolders and theirs (splits, classes): a folder's time changes
    when a file is added, removed or renamed in it, so the scan below is redone exactly when it must be."""
    stamp = []
    for folder in (root, *_subfolders(root)):
        children = [folder] if folder == root else [folder, *_subfolders(folder)]
        stamp += [(str(c), c.stat().st_mtime_ns) for c in children]
    return tuple(stamp)


@lru_cache(maxsize=16)
def _scan(root: Path, stamp: tuple[tuple[str, int], ...]) -> FolderLayout:
    """The layout of an unchanged folder tree is listed once per process: Configure asks on every rerun, and
    listing an ImageNet-size tree takes seconds. (``stamp`` is only the cache key.)"""
    train_folder = _split_folder(root, "train")
    if train_folder is None:
        classes = _two_classes(_scan_classes(root), root)
        names = list(classes)
        files = [path for group in classes.values() for path in group]
        labels = [label for label, f in enumerate(classes.values()) for _ in f]
        return FolderLayout(root, "classes", names, {"train": root}, {"train": files}, {"train": labels})
    folders = {"train": train_folder}
    folders.update({s: f for s in ("val", "test") if (f := _split_folder(root, s)) is not None})
    train = _two_classes(_scan_classes(train_folder), train_folder)
    names = list(train)
    files, labels = {}, {}
    for split, folder in folders.items():
        classes = train if split == "train" else _scan_classes(folder)
        if list(classes) != names:
            only_train = sorted(set(names) - set(classes))
            only_other = sorted(set(classes) - set(names))
            raise DatasetError(
                f"image_folder: {folder} and {train_folder} hold different class folders: {train_folder.name}/ has "
                f"[{', '.join(names)}], {folder.name}/ has [{', '.join(classes)}] (only in {train_folder.name}/: "
                f"{', '.join(only_train) or '-'}; only in {folder.name}/: {', '.join(only_other) or '-'})")
        files[split] = [f for group in classes.values() for f in group]
        labels[split] = [label for label, group in enumerate(classes.values()) for _ in group]
    return FolderLayout(root, "splits", names, folders, files, labels)


def describe_image_folder(root: str | Path | None, val_fraction: float = 0.1, test_fraction: float = 0.2) -> str:
    """One sentence on what ``root`` holds and how val/test will be made (raises DatasetError when it is wrong)."""
    return scan_image_folder(root).describe(val_fraction, test_fraction)


def default_size(layout: FolderLayout) -> int:
    """The images' own side when the first image of every class is square and all share it, else DEFAULT_SIZE.

    Reads only image headers (one per class), so validation stays fast on large folders."""
    sizes = set()
    for split, files in layout.files.items():
        firsts = {}
        for path, label in zip(files, layout.labels[split]):
            firsts.setdefault(label, path)
        for path in firsts.values():
            try:
                with Image.open(path) as img:
                    sizes.add(img.size)
            except (UnidentifiedImageError, OSError) as err:
                raise DatasetError(f"image_folder: cannot read image {path} ({err})") from err
    if len(sizes) == 1:
        (w, h), = sizes
        if w == h:
            return int(w)
    return DEFAULT_SIZE


def image_folder_signature(spec: DatasetSpec) -> tuple[tuple[int, int, int], int]:
    """Input shape and class count, reading image headers only."""
    layout = scan_image_folder(spec.root)
    size = spec.image_size or default_size(layout)
    return (CHANNELS, size, size), len(layout.class_names)


# ---------------------------------------------------------------- decoding, cached on disk
def decode_image(path: str, size: int) -> np.ndarray:
    """(3, size, size) uint8: the image's shorter side resized to ``size``, then centre-cropped."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the file is much larger
            img = img.convert("RGB")  # decodes the whole file: a corrupt one fails here
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"image_folder: cannot decode image {path} ({err}); replace or remove the file") from err
    w, h = img.size
    if (w, h) != (size, size):  # as torchvision's Resize(size) then CenterCrop(size)
        new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def default_cache_root() -> Path:
    """The workspace's cache folder (PATHSCOPE_HOME, default ./workspace), or a temporary folder if not writable."""
    root = cache_dir(workspace_home())
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "pathscope-cache"


def files_key(files: list[str], root: Path, size: int) -> str:
    """Changes with any file's path (relative to root), size or modification time, and with the decoded size."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {size} {len(files)}\n".encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decoded_file(layout: FolderLayout, size: int, cache_root: Path | None, report: Report) -> tuple[Path, str]:
    """The uint8 (N, 3, size, size) file of every image of the layout (decoding them on a miss), and its key."""
    files = layout.all_files()
    key = files_key(files, layout.root, size)
    folder = (cache_root or default_cache_root()) / "images" / key
    pixels = folder / "pixels.u8"
    done = folder / "done.json"
    row_bytes = CHANNELS * size * size
    if done.exists() and pixels.exists() and pixels.stat().st_size == len(files) * row_bytes:
        report(f"image_folder: {len(files):,} decoded {size}x{size} images reused from the cache ({key})")
        return pixels, key
    started = time.time()
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"pixels.{os.getpid()}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, len(files) * row_bytes)
        _decode_all(fd, files, size, row_bytes)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(partial, pixels)  # complete before it is visible: a killed decode is redone, never half-read
    done.write_text(json.dumps({"count": len(files), "shape": [CHANNELS, size, size], "root": str(layout.root)}))
    report(f"image_folder: decoded {len(files):,} images to {size}x{size} in {time.time() - started:.1f} s, "
           f"cached for the next run ({key})")
    return pixels, key


def _decode_all(fd: int, files: list[str], size: int, row_bytes: int) -> None:
    """Decode with one thread per core (PIL releases the GIL while decoding and resizing), a pwrite per chunk."""

    def chunk(first: int) -> None:
        paths = files[first:first + DECODE_CHUNK]
        block = np.stack([decode_image(p, size) for p in paths])
        os.pwrite(fd, memoryview(np.ascontiguousarray(block)).cast("B"), first * row_bytes)

    threads = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(chunk, first) for first in range(0, len(files), DECODE_CHUNK)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _train_stats(pixels: Path, rows: torch.Tensor, images: DiskImages) -> tuple[torch.Tensor, torch.Tensor]:
    """The train split's statistics, computed once per (decoded file, train rows) and kept beside the file."""
    key = hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16]
    stored = pixels.parent / f"stats-{key}.json"
    if stored.exists():
        saved = json.loads(stored.read_text())
        return torch.tensor(saved["mean"], dtype=torch.float32), torch.tensor(saved["std"], dtype=torch.float32)
    mean, std = images.channel_stats()
    tmp = stored.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
    os.replace(tmp, stored)
    return mean, std


def _should_stream(spec: DatasetSpec, float_bytes: int) -> tuple[bool, str]:
    limit = spec.memory_limit_mb << 20
    size = f"{float_bytes / (1 << 20):,.0f} MB as float32"
    if spec.stream == "on":
        return True, f"image_folder: streaming from disk (dataset.stream: on; {size} in memory otherwise)"
    if spec.stream == "off":
        return False, f"image_folder: held in memory ({size}; dataset.stream: off)"
    if float_bytes > limit:
        return True, (f"image_folder: streaming from disk through {spec.loader_workers} loader worker(s): {size} is "
                      f"above dataset.memory_limit_mb ({spec.memory_limit_mb:,} MB)")
    return False, f"image_folder: held in memory ({size}, within dataset.memory_limit_mb {spec.memory_limit_mb:,} MB)"


@DATASETS.register("image_folder", "a folder of class subfolders of images, or train/ (val/, test/) folders of "
                                   "them (root required; RGB, resized and centre-cropped)",
                   signature=image_folder_signature, streams=True, disk_cache=True, ignores=("download",))
def load_image_folder(spec: DatasetSpec, cache_root: Path | None = None, report: Report | None = None) -> DataBundle:
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if report is not None:
            report(message)

    layout = scan_image_folder(spec.root)
    note(layout.describe(spec.val_fraction, spec.test_fraction))
    size = spec.image_size or default_size(layout)
    pixels, key = decoded_file(layout, size, cache_root, note)
    y = torch.tensor([label for s in ("train", "val", "test") for label in layout.labels.get(s, ())],
                     dtype=torch.long)
    train_rows, val_rows, test_rows = plan_splits(spec, y, layout.count("train"), layout.count("val"),
                                                  layout.count("test"))
    shape = (CHANNELS, size, size)
    used = len(train_rows) + len(val_rows) + len(test_rows)
    stream, why = _should_stream(spec, used * CHANNELS * size * size * 4)
    note(why)
    raw_train = DiskImages(pixels, shape, train_rows, torch.zeros(CHANNELS), torch.ones(CHANNELS))
    mean, std = normalization(spec, CHANNELS, lambda: _train_stats(pixels, train_rows, raw_train))
    note(describe_normalization(spec, mean, std))

    def split(rows: torch.Tensor) -> Split:
        x = DiskImages(pixels, shape, rows, mean, std, workers=spec.loader_workers)
        return Split(x if stream else x.load(), y[rows].clone(), rows.clone())

    return DataBundle(name="image_folder", num_classes=len(layout.class_names), in_channels=CHANNELS,
                      image_size=size, class_names=list(layout.class_names), mean=tuple(mean.tolist()),
                      std=tuple(std.tolist()), train=split(train_rows), val=split(val_rows), test=split(test_rows),
                      fingerprint=key, notes=notes)
