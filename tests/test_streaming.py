"""Streaming from disk: the same images, batches and run as the in-memory path, with memory bounded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import iterate_batches, load_dataset
from engine.data.disk import DiskImages
from engine.data.stream import live_batches
from engine.diagnostics.planted import defective_train_split
from engine.runner import execute_run
from engine.spec import DatasetSpec, parse_spec
from engine.train import NullReporter
from tests.test_image_folder import make_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ of three classes (16x16 PNGs) and a test/ folder: a few seconds of training."""
    root = tmp_path_factory.mktemp("streaming") / "data"
    make_folder(root / "train", {"a": 40, "b": 40, "c": 40}, size=(16, 16))
    make_folder(root / "test", {"a": 10, "b": 10, "c": 10}, size=(16, 16), seed=1)
    return root


def _pair(folder: Path, cache: Path, **fields):
    spec = DatasetSpec(name="image_folder", root=str(folder), **fields)
    on = load_dataset(spec.model_copy(update={"stream": "on"}), cache_root=cache)
    off = load_dataset(spec.model_copy(update={"stream": "off"}), cache_root=cache)
    return on, off


def test_a_streamed_split_reads_what_the_in_memory_split_holds(folder: Path, tmp_path: Path) -> None:
    on, off = _pair(folder, tmp_path)
    assert on.streamed and not off.streamed
    assert (on.mean, on.std, on.fingerprint) == (off.mean, off.std, off.fingerprint)
    for s_on, s_off in ((on.train, off.train), (on.val, off.val), (on.test, off.test)):
        assert isinstance(s_on.x, DiskImages) and s_on.x.shape == s_off.x.shape and len(s_on.x) == len(s_off.x)
        assert torch.equal(s_on.y, s_off.y) and torch.equal(s_on.index, s_off.index)
        positions = torch.randperm(len(s_on), generator=torch.Generator().manual_seed(0))[:17]
        assert torch.equal(s_on.x[positions], s_off.x[positions])
        assert torch.equal(s_on.x[3:11], s_off.x[3:11]) and torch.equal(s_on.x[5], s_off.x[5])
        assert torch.equal((-s_on.x)[positions], -s_off.x[positions])
        assert torch.equal(s_on.take(positions).x[2:5], s_off.take(positions).x[2:5])
    batches_on = list(iterate_batches(on.val, 7, True, torch.Generator().manual_seed(1)))
    batches_off = list(iterate_batches(off.val, 7, True, torch.Generator().manual_seed(1)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) for a, b in zip(batches_on, batches_off))


def test_loader_workers_give_the_same_augmented_batches(folder: Path, tmp_path: Path) -> None:
    on, off = _pair(folder, tmp_path, loader_workers=2)
    for mode in ("flip_crop", "random_resized_crop"):
        streamed = list(live_batches(on.train, 16, mode, torch.Generator().manual_seed(4)))
        memory = list(live_batches(off.train, 16, mode, torch.Generator().manual_seed(4)))
        assert len(streamed) == len(memory) == 7
        for a, b in zip(streamed, memory):
            assert torch.equal(a.x, b.x) and torch.equal(a.position, b.position) and torch.equal(a.y, b.y)


def test_auto_streams_above_the_memory_limit(folder: Path, tmp_path: Path) -> None:
    notes: list[str] = []
    # 150 images of 3x64x64 float32 = 7 MB: above a 1 MB limit, within the default 2 GB
    big = load_dataset(DatasetSpec(name="image_folder", root=str(folder), image_size=64, memory_limit_mb=1),
                       cache_root=tmp_path, report=notes.append)
    assert big.streamed and any("above dataset.memory_limit_mb (1 MB)" in n for n in notes)
    assert not load_dataset(DatasetSpec(name="image_folder", root=str(folder), image_size=64),
                            cache_root=tmp_path).streamed


def test_planted_defects_work_on_a_streamed_split(folder: Path, tmp_path: Path) -> None:
    on, off = _pair(folder, tmp_path)
    for defect in ("inverted_input", "under_trained", "permuted_labels"):
        a = defective_train_split(on, defect, 0.4, seed=0)
        b = defective_train_split(off, defect, 0.4, seed=0)
        assert a.streamed and torch.equal(a.x[: len(a)], b.x) and torch.equal(a.y, b.y)


def _run_spec(folder: Path, stream: str, augment: str, cache: bool, workers: int = 2) -> object:
    return parse_spec({
        "name": f"stream-{stream}",
        "dataset": {"name": "image_folder", "root": str(folder), "batch_size": 32, "stream": stream,
                    "augment": augment, "loader_workers": workers},
        "teachers": [{"id": "t", "arch": "small_cnn", "arch_params": {"width": 8},
                      "source": {"kind": "train", "epochs": 1}}],
        "student": {"arch": "small_cnn", "arch_params": {"width": 8}},
        "paths": [{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
        "teacher_cache": {"enabled": cache},
        "diagnostics": {"enabled": True, "every": 2, "val_batch_size": 8},
        "epochs": 2, "seed": 3, "log_every": 1,
    })


def _metrics(reporter: NullReporter) -> list[tuple]:
    """The student's logged metrics (the inline teacher is trained by the first run and reused by the second),
    but for what the clock decides: timings and system metrics."""
    return [row for row in reporter.rows
            if row[0] == "main" and not row[3].startswith(("time/", "throughput/", "system/"))]


@pytest.mark.parametrize("augment, cache", [("none", True), ("flip_crop", False)])
def test_a_streamed_run_equals_the_in_memory_run_step_for_step(folder: Path, home: Path, augment: str,
                                                               cache: bool) -> None:
    """Every logged metric (losses, weights, lr, probe, accuracies) of the two runs, same seed."""
    reporters, results = {}, {}
    for stream in ("off", "on"):
        reporters[stream] = NullReporter()
        results[stream] = execute_run(_run_spec(folder, stream, augment, cache), f"run-{stream}-{augment}", home,
                                      reporters[stream])
    memory, streamed = _metrics(reporters["off"]), _metrics(reporters["on"])
    assert len(memory) > 80 and memory == streamed
    keys = {row[3] for row in memory}
    assert {"acc/val", "loss/path:t-kd"} <= keys and any(key.startswith("diag/") for key in keys)
    assert results["off"]["test_acc"] == results["on"]["test_acc"]
    assert any("streaming from disk (dataset.stream: on" in m for _, m in reporters["on"].events)
    # How images are read is no part of a teacher's recipe: the streamed run reuses the teacher trained in memory.
    assert any(m.startswith("teacher t: reused cached") for _, m in reporters["on"].events)
    if cache:  # a streamed run still serves the teacher from the cache, memory-mapped
        assert any(m.startswith("teacher cache: t reused") for _, m in reporters["on"].events)


def test_streamed_run_with_augmentation_runs_teachers_live_and_says_why(folder: Path, home: Path) -> None:
    reporter = NullReporter()
    execute_run(_run_spec(folder, "on", "flip_crop", cache=True, workers=0), "run-live", home, reporter)
    assert any("teacher cache: off, the dataset streams from disk" in m for _, m in reporter.events)


def test_streamed_teacher_cache_is_memory_mapped(folder: Path, home: Path) -> None:
    from engine.data.teacher_cache import CachedTaps
    import engine.runner as runner

    seen: list[CachedTaps] = []
    original = runner.load_or_build

    def spy(*args, **kwargs):
        cached, built = original(*args, **kwargs)
        seen.append(cached)
        return cached, built

    runner.load_or_build = spy
    try:
        execute_run(_run_spec(folder, "on", "none", cache=True, workers=0), "run-mmap", home, NullReporter())
    finally:
        runner.load_or_build = original
    assert seen and all(isinstance(a, np.memmap) for a in seen[0].arrays.values())


def test_placing_data_on_a_gpu_leaves_streamed_splits_on_disk(folder: Path, tmp_path: Path) -> None:
    """_place_data's CUDA branch with only streamed splits: nothing is moved (runs without a GPU)."""
    from engine.runner import _place_data

    on, _ = _pair(folder, tmp_path)
    assert _place_data(on, None, torch.device("cuda"), torch.nn.Conv2d(3, 3, 1), {}) is None
    assert all(isinstance(s.x, DiskImages) and s.y.device.type == "cpu" for s in (on.train, on.val, on.test))
