"""engine.data: splits, normalisation, file formats and augmentation, all on local tiny data."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import DATASETS, DatasetError, iterate_batches, load_dataset
from engine.data.augment import augment_batch
from engine.data.idx import FILES
from engine.spec import DatasetSpec

ROOT = Path(__file__).resolve().parents[1]


def _ids(bundle) -> dict[str, list[int]]:
    return {name: getattr(bundle, name).index.tolist() for name in ("train", "val", "test")}


def test_registered_names():
    assert {"digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "image_folder"} <= set(DATASETS.names())


def test_digits_bundle_shapes_and_types():
    b = load_dataset(DatasetSpec(name="digits"))
    assert b.input_shape == (1, 8, 8) and b.num_classes == 10 and len(b.class_names) == 10
    for split in (b.train, b.val, b.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 8, 8)
        assert split.y.dtype == torch.int64 and split.index.dtype == torch.int64
        assert len(split.x) == len(split.y) == len(split.index)


def test_split_is_deterministic_across_calls_and_processes():
    spec = DatasetSpec(name="digits", split_seed=3)
    first = _ids(load_dataset(spec))
    assert first == _ids(load_dataset(spec))
    code = (
        "import json; from engine.data import load_dataset; from engine.spec import DatasetSpec;"
        "b = load_dataset(DatasetSpec(name='digits', split_seed=3));"
        "print(json.dumps({n: getattr(b, n).index.tolist() for n in ('train', 'val', 'test')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == first


def test_splits_are_disjoint_and_cover_the_dataset():
    b = load_dataset(DatasetSpec(name="digits", val_fraction=0.1, test_fraction=0.2))
    ids = torch.cat([b.train.index, b.val.index, b.test.index])
    assert ids.unique().numel() == ids.numel() == 1797
    assert len(b.test) == round(0.2 * 1797)
    assert len(b.val) == round(0.1 * (1797 - len(b.test)))
    # roughly stratified: every class is in the test split in about its share
    assert torch.bincount(b.test.y, minlength=10).min() >= 30


def test_split_seed_changes_the_split():
    a = _ids(load_dataset(DatasetSpec(name="digits", split_seed=0)))
    b = _ids(load_dataset(DatasetSpec(name="digits", split_seed=1)))
    assert a["test"] != b["test"]


def test_train_size_caps_train_only():
    full = load_dataset(DatasetSpec(name="digits"))
    capped = load_dataset(DatasetSpec(name="digits", train_size=100))
    assert len(capped.train) == 100
    assert capped.val.index.tolist() == full.val.index.tolist()
    assert capped.test.index.tolist() == full.test.index.tolist()
    assert set(capped.train.index.tolist()) <= set(full.train.index.tolist())
    assert torch.bincount(capped.train.y, minlength=10).min() >= 8  # a prefix of a stratified order


def test_normalisation_uses_train_statistics():
    b = load_dataset(DatasetSpec(name="digits"))
    assert abs(b.train.x.mean().item()) < 1e-4
    assert abs(b.train.x.std().item() - 1) < 1e-3
    raw_max = (b.train.x * b.std[0] + b.mean[0]).max().item()
    assert 0.99 < raw_max <= 1.0 + 1e-5  # mean/std are in [0, 1] pixel units


def test_image_size_resizes():
    b = load_dataset(DatasetSpec(name="digits", image_size=16, val_fraction=0.0))
    assert b.input_shape == (1, 16, 16) and b.test.x.shape[1:] == (1, 16, 16)
    assert len(b.val) == 0 and b.val.x.shape[1:] == (1, 16, 16)  # an empty split keeps its shape


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_idx_folder(folder: Path, n_train: int = 40, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28)),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28)),
        "test_y": np.arange(n_test) % 10,
    }
    for key, stem in FILES.items():
        data = _idx_bytes(arrays[key])
        if key.startswith("train"):  # train files gzipped, test files raw: both must parse
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def test_fashion_mnist_from_tiny_idx_files(tmp_path):
    _write_idx_folder(tmp_path)
    b = load_dataset(DatasetSpec(name="fashion_mnist", root=str(tmp_path), val_fraction=0.1))
    assert b.input_shape == (1, 28, 28) and b.class_names[0] == "T-shirt/top"
    assert len(b.train) + len(b.val) == 40 and len(b.test) == 10
    assert b.test.index.tolist() == list(range(40, 50))  # official test ids follow the train ids
    assert b.test.y.tolist() == list(range(10))


def test_idx_bad_header_is_reported(tmp_path):
    _write_idx_folder(tmp_path)
    (tmp_path / f"{FILES['test_y']}").write_bytes(b"not idx at all")
    with pytest.raises(DatasetError, match="not an IDX file"):
        load_dataset(DatasetSpec(name="fashion_mnist", root=str(tmp_path)))


def test_missing_idx_folder_names_folder_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset(DatasetSpec(name="fashion_mnist", root=str(missing)))
    message = str(err.value)
    assert str(missing) in message and "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "download: true" in message


def test_missing_cifar_folder_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(DatasetSpec(name="cifar10", root=str(tmp_path)))
    assert str(tmp_path) in str(err.value) and "cifar-10-batches-py" in str(err.value)


def test_image_folder_from_tiny_pngs(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            size = (12 + i, 20)  # sizes differ on purpose
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not a class")
    b = load_dataset(DatasetSpec(name="image_folder", root=str(tmp_path), image_size=16, test_fraction=0.2),
                     cache_root=tmp_path / "cache")
    assert b.class_names == ["cat", "dog"] and b.input_shape == (3, 16, 16)
    assert len(b.train) + len(b.val) + len(b.test) == 20 and len(b.test) == 4


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DatasetSpec(name="image_folder", root=str(tmp_path / "absent")))
    with pytest.raises(DatasetError, match="no class subfolders with images"):
        load_dataset(DatasetSpec(name="image_folder", root=str(tmp_path)), cache_root=tmp_path / "cache")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="class folder .*empty_class is empty"):
        load_dataset(DatasetSpec(name="image_folder", root=str(tmp_path)), cache_root=tmp_path / "cache")


def test_iterate_batches_covers_split_once():
    b = load_dataset(DatasetSpec(name="digits", train_size=100))
    batches = list(iterate_batches(b.train, 32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y, _ in batches] == [32, 32, 32, 4]
    seen = torch.cat([i for _, _, i in batches])
    assert sorted(seen.tolist()) == sorted(b.train.index.tolist())
    x, y, i = next(iterate_batches(b.train, 8, shuffle=False, generator=None))
    assert torch.equal(x, b.train.x[:8]) and torch.equal(i, b.train.index[:8])


def _windows(x: torch.Tensor, pad: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    h, w = x.shape[-2:]
    crops = [padded[..., dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


@pytest.mark.parametrize("size", [8, 32])
def test_augment_is_deterministic_and_keeps_shape(size):
    x = torch.randn(16, 3, size, size)
    for mode in ("crop", "flip_crop"):
        a = augment_batch(x, mode, torch.Generator().manual_seed(5))
        b = augment_batch(x, mode, torch.Generator().manual_seed(5))
        assert a.shape == x.shape and torch.equal(a, b)
        assert not torch.equal(a, x)
    assert augment_batch(x, "none", torch.Generator()) is x


def test_augment_outputs_are_crops_of_the_padded_image():
    x = torch.randn(12, 1, 8, 8)
    out = augment_batch(x, "flip_crop", torch.Generator().manual_seed(1))
    for sample, result in zip(x, out):
        assert any(torch.equal(result, w) for w in _windows(sample, pad=1))
    crop = augment_batch(x, "crop", torch.Generator().manual_seed(1))
    for sample, result in zip(x, crop):  # plain crop never flips
        assert any(torch.equal(result, w) for w in _windows(sample, pad=1)[:9])


def test_augment_rejects_unknown_mode():
    with pytest.raises(ValueError, match="rotate"):
        augment_batch(torch.zeros(1, 1, 8, 8), "rotate", torch.Generator())
