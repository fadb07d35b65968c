"""Image folders as users lay them out: layouts, class names, bad inputs, decoding cache, size, normalisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import DatasetError, dataset_signature, load_dataset
from engine.data import image_folder
from engine.data.augment import augment_batch
from engine.data.image_folder import describe_image_folder, scan_image_folder
from engine.data.teacher_cache import data_fingerprint
from engine.spec import DatasetSpec, parse_spec
from engine.validate import validate_spec
from tests.conftest import ROOT, tiny_spec_dict

CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpg"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"{CIFAR} not present")


def make_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 12), seed: int = 0,
                ext: str = "png") -> Path:
    """root/<class>/<i>.<ext>: `count` random RGB images per class."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.{ext}")
    return root


def load(root: Path, cache: Path, **fields):
    return load_dataset(DatasetSpec(name="image_folder", root=str(root), **fields), cache_root=cache)


# ---------------------------------------------------------------- layouts
@needs_cifar
def test_cifar_train_and_test_folders_are_the_splits_with_cifar_class_names(tmp_path: Path) -> None:
    notes: list[str] = []
    b = load_dataset(DatasetSpec(name="image_folder", root=str(CIFAR), val_fraction=0.0), cache_root=tmp_path,
                     report=notes.append)
    assert b.class_names == CIFAR_CLASSES and b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert (len(b.train), len(b.val), len(b.test)) == (3000, 0, 1000)
    assert b.test.index.min().item() == 3000  # test images are the test folder's, never training images
    assert torch.bincount(b.test.y).tolist() == [100] * 10
    assert "train/ (3,000 images) and test/ (1,000 images) found under" in notes[0]
    assert any(n.startswith("normalisation: the train split's statistics") for n in notes)
    # with the default val_fraction, val is drawn from train/ and test/ is untouched
    b = load_dataset(DatasetSpec(name="image_folder", root=str(CIFAR)), cache_root=tmp_path)
    assert (len(b.train), len(b.val), len(b.test)) == (2700, 300, 1000)
    assert b.val.index.max().item() < 3000
    assert dataset_signature(DatasetSpec(name="image_folder", root=str(CIFAR))) == ((3, 32, 32), 10)


@needs_cifar
def test_pointing_at_the_train_folder_is_explained() -> None:
    text = describe_image_folder(CIFAR / "train", 0.1, 0.2)
    assert "holds 10 class folders (3,000 images" in text
    assert "drawn from them: test (20%), then val (10% of the rest)" in text
    assert f"point dataset.root at {CIFAR}" in text


def test_val_folder_is_used_and_missing_test_is_drawn_from_train(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_folder(root / "train", {"a": 10, "b": 10})
    make_folder(root / "valid", {"a": 3, "b": 3}, seed=1)
    layout = scan_image_folder(root)
    assert layout.kind == "splits" and set(layout.folders) == {"train", "val"}
    assert layout.describe(0.1, 0.6).endswith("2 classes: a, b; drawn from train: test (60%)")
    b = load(root, tmp_path / "cache", test_fraction=0.6)
    assert (len(b.train), len(b.val), len(b.test)) == (8, 6, 12)
    assert sorted(b.val.index.tolist()) == list(range(20, 26))  # the valid/ images, after train/'s


def test_flat_root_carves_val_and_test_with_any_fraction(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"cat": 20, "dog": 20})
    (root / "README.txt").write_text("files beside the class folders are not images of a class")
    b = load(root, tmp_path / "cache", val_fraction=0.1, test_fraction=0.7)
    assert b.class_names == ["cat", "dog"]
    assert (len(b.train), len(b.val), len(b.test)) == (11, 1, 28)  # val: 10% of what test leaves
    ids = torch.cat([b.train.index, b.val.index, b.test.index])
    assert sorted(ids.tolist()) == list(range(40))


def test_hidden_files_and_folders_are_ignored(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    (root / ".ipynb_checkpoints").mkdir()
    assert scan_image_folder(root).class_names == ["a", "b"]


# ---------------------------------------------------------------- bad inputs name the field, folder or file
def test_mismatched_class_sets_name_both_sets(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_folder(root / "train", {"cat": 2, "dog": 2, "fox": 2})
    make_folder(root / "test", {"cat": 2, "dog": 2, "owl": 2})
    with pytest.raises(DatasetError) as err:
        load(root, tmp_path / "cache")
    message = str(err.value)
    assert "train/ has [cat, dog, fox]" in message and "test/ has [cat, dog, owl]" in message
    assert "only in train/: fox" in message and "only in test/: owl" in message
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing written
    # validation (Configure, `engine validate`, submit) says the same before any run exists
    errors = validate_spec(parse_spec(tiny_spec_dict(dataset={"name": "image_folder", "root": str(root)})))
    assert len(errors) == 1 and errors[0].startswith("dataset: image_folder:")
    assert "test/ has [cat, dog, owl]" in errors[0]


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"a": 3})
    (root / "b").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*data/b is empty"):
        load(root, tmp_path / "cache")


def test_non_image_file_in_a_class_folder_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    (root / "b" / "labels.csv").write_text("x")
    with pytest.raises(DatasetError, match=r"data/b/labels.csv is not an image"):
        load(root, tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"labels.csv is not an image"):  # validation says it too
        dataset_signature(DatasetSpec(name="image_folder", root=str(root)))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpeg_is_named_and_leaves_no_cache(tmp_path: Path, damage: str) -> None:
    root = make_folder(tmp_path / "data", {"a": 40, "b": 40}, ext="jpg")
    bad = root / "b" / "017.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a jpeg at all" * 10)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"cannot decode image .*data/b/017.jpg"):
        load(root, cache)
    leftovers = [p.name for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []  # no partial pixels file, no completion marker


def test_bad_normalisation_and_stream_name_their_field(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"^dataset.normalize: imagenet has 3 value"):
        load_dataset(DatasetSpec(name="digits", normalize="imagenet"))
    with pytest.raises(DatasetError, match=r"^dataset.normalize: the given mean/std has 2 value"):
        dataset_signature(DatasetSpec(name="digits", normalize={"mean": [0.1, 0.2], "std": [1, 1]}))
    with pytest.raises(DatasetError, match=r"^dataset.stream: digits is decoded into memory whole"):
        load_dataset(DatasetSpec(name="digits", stream="on"))
    errors = validate_spec(parse_spec(tiny_spec_dict(dataset={"name": "digits", "stream": "on"})))
    assert len(errors) == 1 and "dataset.stream" in errors[0]


# ---------------------------------------------------------------- decoding cache
def test_second_load_reads_the_decoded_cache_and_a_changed_file_is_decoded_again(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    root = make_folder(tmp_path / "data", {"a": 6, "b": 6})
    cache = tmp_path / "cache"
    first = load(root, cache, normalize="none")
    decoded: list[str] = []
    real = image_folder.decode_image
    monkeypatch.setattr(image_folder, "decode_image", lambda path, size: decoded.append(path) or real(path, size))
    again = load(root, cache, normalize="none")
    assert decoded == [] and torch.equal(first.train.x, again.train.x) and first.fingerprint == again.fingerprint
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "a" / "000.png")  # new content, new mtime
    changed = load(root, cache, normalize="none")
    assert len(decoded) == 12 and changed.fingerprint != first.fingerprint
    # the teacher-output cache follows the folder's content and the normalisation
    spec = DatasetSpec(name="image_folder", root=str(root))
    assert data_fingerprint(spec, 1, 0, False, first.fingerprint) != data_fingerprint(spec, 1, 0, False,
                                                                                      changed.fingerprint)
    imagenet = spec.model_copy(update={"normalize": "imagenet"})
    assert data_fingerprint(spec, 1, 0, False) != data_fingerprint(imagenet, 1, 0, False)


# ---------------------------------------------------------------- size and normalisation
def test_image_size_is_torchvisions_resize_and_centre_crop(tmp_path: Path) -> None:
    import torchvision.transforms.functional as TF

    root = make_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(50, 37))
    b = load(root, tmp_path / "cache", image_size=24, normalize="none", val_fraction=0.0, test_fraction=0.5)
    assert b.input_shape == (3, 24, 24)
    for x, index in zip(b.train.x, b.train.index):
        path = scan_image_folder(root).all_files()[index]
        with Image.open(path) as img:
            expected = TF.pil_to_tensor(TF.center_crop(TF.resize(img.convert("RGB"), 24), 24)).float() / 255
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


def test_default_size_is_the_images_own_when_they_share_it(tmp_path: Path) -> None:
    same = make_folder(tmp_path / "same", {"a": 2, "b": 2}, size=(20, 20))
    assert dataset_signature(DatasetSpec(name="image_folder", root=str(same)))[0] == (3, 20, 20)
    mixed = make_folder(tmp_path / "mixed", {"a": 2}, size=(20, 20))
    make_folder(mixed, {"b": 2}, size=(30, 30))
    assert dataset_signature(DatasetSpec(name="image_folder", root=str(mixed)))[0] == (3, 32, 32)


def test_normalisation_choices_are_applied_and_kept_in_the_bundle(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"a": 8, "b": 8})
    cache = tmp_path / "cache"
    raw = load(root, cache, normalize="none")
    assert raw.mean == (0.0, 0.0, 0.0) and raw.std == (1.0, 1.0, 1.0)
    assert 0.0 <= raw.train.x.min() and raw.train.x.max() <= 1.0
    imagenet = load(root, cache, normalize="imagenet")
    assert imagenet.mean == pytest.approx((0.485, 0.456, 0.406))
    assert imagenet.std == pytest.approx((0.229, 0.224, 0.225))
    mean, std = torch.tensor(imagenet.mean)[:, None, None], torch.tensor(imagenet.std)[:, None, None]
    torch.testing.assert_close(imagenet.train.x * std + mean, raw.train.x)
    explicit = load(root, cache, normalize={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    torch.testing.assert_close(explicit.test.x, (raw.test.x - 0.5) / 0.25)
    own = load(root, cache)  # "dataset": the train split's own statistics
    assert abs(own.train.x.mean().item()) < 1e-3 and abs(own.train.x.std().item() - 1) < 1e-2
    flat = raw.train.x.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(torch.tensor(own.mean), flat.mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(own.std), flat.std(1), rtol=0, atol=1e-5)


def test_random_resized_crop_is_batched_seeded_and_keeps_shape() -> None:
    x = torch.randn(32, 3, 24, 24)
    a = augment_batch(x, "random_resized_crop", torch.Generator().manual_seed(3))
    b = augment_batch(x, "random_resized_crop", torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    constant = torch.full((8, 3, 24, 24), 0.7)  # any crop of a constant image, resized, is that constant
    torch.testing.assert_close(augment_batch(constant, "random_resized_crop", torch.Generator()), constant)


def test_a_folder_tree_is_listed_once_until_a_file_is_added_or_removed(tmp_path: Path) -> None:
    from engine.data.image_folder import scan_image_folder

    root = tmp_path / "data"
    make_folder(root / "train", {"a": 2, "b": 2})
    make_folder(root / "test", {"a": 2, "b": 2})
    first = scan_image_folder(root)
    assert scan_image_folder(root) is first  # Configure asks on every rerun: the same listing, not a new one
    make_folder(root / "train", {"b": 3}, seed=1)  # a third image in train/b
    again = scan_image_folder(root)
    assert again is not first and again.count("train") == 5 and first.count("train") == 4
    (root / "test" / "a" / "000.png").unlink()
    assert scan_image_folder(root).count("test") == 3
