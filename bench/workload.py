"""What every training configuration of the speed bench runs on: the same tensors, models and teachers.

Two workloads:
- "cifar": resnet56 -> resnet20 on 3x32x32 images: Fashion-MNIST resized to 32x32 with its grey
  channel repeated (when Debian's dataset-fashion-mnist is installed), else seeded random tensors;
- "digits": small_cnn teachers -> a narrower small_cnn on scikit-learn's 8x8 digits.
The engine reads the cifar tensors through a dataset registered here ("bench32"), so the plain
loops, PathScope and torchdistill all train on exactly the same images.
Teachers keep their seeded initial weights: a step costs the same whatever a teacher knows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.data import DATASETS, DatasetError, load_dataset
from engine.data.bundle import DataBundle, Split
from engine.models import build_model
from engine.spec import DatasetSpec

BATCH_SIZE = 64
CLASSES = 10
EVAL_SIZE = 256  # val and test images: evaluated between epochs, outside the timings
BENCH_DATASET = "bench32"


@dataclass(frozen=True)
class TeacherDef:
    id: str
    arch: str
    params: dict


@dataclass
class Workload:
    key: str  # "cifar" or "digits": names its runs
    name: str
    data_note: str  # what the images are, for the table
    bundle: DataBundle
    dataset: dict  # the RunSpec's dataset section that loads ``bundle``
    student: str
    student_params: dict
    teachers: list[TeacherDef]  # the first one is the single-path KD teacher
    checkpoints: dict[str, Path]  # teacher id -> saved initial weights


def _split(x: torch.Tensor, y: torch.Tensor, first_id: int) -> Split:
    return Split(x.contiguous(), y, torch.arange(first_id, first_id + len(y)))


def _fashion_images(count: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Normalised Fashion-MNIST train images (32x32, grey repeated to 3 channels) and labels; None if not installed."""
    try:
        bundle = load_dataset(DatasetSpec(name="fashion_mnist", image_size=32, train_size=count))
    except DatasetError:
        return None
    return bundle.train.x.repeat(1, 3, 1, 1), bundle.train.y


def cifar_bundle(train_images: int) -> tuple[DataBundle, str]:
    """train_images + 2 x EVAL_SIZE images of shape 3x32x32, and a note on where they come from."""
    total = train_images + 2 * EVAL_SIZE
    found = _fashion_images(total)
    if found is not None:
        x, y = found
        note = "Fashion-MNIST resized to 3x32x32"
    else:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(total, 3, 32, 32, generator=generator)
        y = torch.randint(0, CLASSES, (total,), generator=generator)
        note = "random 3x32x32 tensors (Fashion-MNIST not installed)"
    val, test = train_images, train_images + EVAL_SIZE
    bundle = DataBundle(
        name=BENCH_DATASET, num_classes=CLASSES, in_channels=3, image_size=32,
        class_names=[str(c) for c in range(CLASSES)], mean=(0.0,) * 3, std=(1.0,) * 3,
        train=_split(x[:val], y[:val], 0), val=_split(x[val:test], y[val:test], val),
        test=_split(x[test:], y[test:], test))
    return bundle, note


def register_bench_dataset(bundle: DataBundle) -> None:
    """Lets a RunSpec name the bench's tensors ({"name": "bench32"}), like any registered dataset."""
    DATASETS.register(BENCH_DATASET, "the speed bench's in-memory images", shape=(3, 32, 32),
                      classes=CLASSES)(lambda _spec: bundle)


def save_initial_weights(teachers: list[TeacherDef], bundle: DataBundle, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed, teacher in enumerate(teachers):
        torch.manual_seed(seed)
        model = build_model(teacher.arch, bundle.num_classes, bundle.in_channels, bundle.image_size, teacher.params)
        paths[teacher.id] = folder / f"{teacher.id}.pt"
        torch.save({"state_dict": model.state_dict()}, paths[teacher.id])
    return paths


def cifar_workload(train_images: int, folder: Path) -> Workload:
    bundle, note = cifar_bundle(train_images)
    register_bench_dataset(bundle)
    teachers = [TeacherDef("r56", "resnet56", {}), TeacherDef("r32", "resnet32", {}), TeacherDef("r44", "resnet44", {})]
    return Workload("cifar", "resnet56 -> resnet20", f"{train_images:,} {note}", bundle,
                    {"name": BENCH_DATASET, "batch_size": BATCH_SIZE}, "resnet20", {}, teachers,
                    save_initial_weights(teachers, bundle, folder / "cifar"))


def digits_workload(folder: Path) -> Workload:
    dataset = {"name": "digits", "batch_size": BATCH_SIZE}
    bundle = load_dataset(DatasetSpec(**dataset))
    teachers = [TeacherDef(f"cnn{w}", "small_cnn", {"width": w}) for w in (32, 48, 64)]
    checkpoints = save_initial_weights(teachers, bundle, folder / "digits")
    return Workload("digits", "small_cnn -> small_cnn(16) on digits", f"{len(bundle.train):,} 8x8 digits", bundle,
                    dataset, "small_cnn", {"width": 16}, teachers, checkpoints)


def load_teacher(workload: Workload, teacher: TeacherDef) -> torch.nn.Module:
    bundle = workload.bundle
    model = build_model(teacher.arch, bundle.num_classes, bundle.in_channels, bundle.image_size, teacher.params)
    model.load_state_dict(torch.load(workload.checkpoints[teacher.id], weights_only=True)["state_dict"])
    return model.eval()


def new_student(workload: Workload) -> torch.nn.Module:
    bundle = workload.bundle
    torch.manual_seed(0)
    return build_model(workload.student, bundle.num_classes, bundle.in_channels, bundle.image_size,
                       workload.student_params)
