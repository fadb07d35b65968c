"""Teacher-output cache: same outputs as the live teacher, keyed so stale caches are never read, shared."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.data import load_dataset
from engine.data.stream import make_views, view_batches
from engine.data.teacher_cache import CachedTaps, cache_folder, load_or_build
from engine.models import build_model
from engine.models.spots import TappedModel
from engine.runner import execute_run
from engine.spec import DatasetSpec, parse_spec
from engine.train import NullReporter, TeacherTaps
from tests.conftest import ROOT, tiny_spec_dict

DIGITS = DatasetSpec(name="digits")


def _teacher(seed: int = 0) -> TeacherTaps:
    torch.manual_seed(seed)
    model = build_model("small_cnn", 10, 1, 8, {}).eval()
    return TeacherTaps(TappedModel(model, "small_cnn", ["conv2", "pool"]))


def _build(home: Path, teacher: TeacherTaps, dataset: DatasetSpec = DIGITS) -> tuple[CachedTaps, list[str], Path]:
    bundle = load_dataset(dataset)
    views = make_views(bundle.train, dataset.augment, 3, seed=0)
    folder = cache_folder(home, teacher.model.model, dataset, 3, 0, fp16=False)
    cached, built = load_or_build(folder, ["conv2", "fc", "pool"], teacher, views, False, torch.device("cpu"),
                                  lambda _f: None)
    return cached, built, folder


def test_cached_outputs_equal_the_live_teacher(tmp_path: Path) -> None:
    teacher = _teacher()
    cached, built, _ = _build(tmp_path, teacher)
    assert built == ["conv2", "fc", "pool"]
    bundle = load_dataset(DIGITS)
    position = torch.tensor([5, 0, 17, 300])
    live = teacher(bundle.train.x[position])
    served = cached.lookup(position, torch.zeros_like(position), torch.device("cpu"))
    for spot in ("conv2", "fc", "pool"):
        torch.testing.assert_close(served[spot], live[spot], rtol=1e-5, atol=1e-6)


def test_a_new_checkpoint_or_other_data_gets_a_new_cache(tmp_path: Path) -> None:
    _, _, folder = _build(tmp_path, _teacher(0))
    assert _build(tmp_path, _teacher(0))[1] == []  # same weights, same data: reused as it is
    assert cache_folder(tmp_path, _teacher(1).model.model, DIGITS, 3, 0, False) != folder
    resized = DIGITS.model_copy(update={"train_size": 500})
    assert cache_folder(tmp_path, _teacher(0).model.model, resized, 3, 0, False) != folder
    augmented = DIGITS.model_copy(update={"augment": "crop"})
    assert cache_folder(tmp_path, _teacher(0).model.model, augmented, 3, 0, False) != folder
    batch_size_only = DIGITS.model_copy(update={"batch_size": 7})
    assert cache_folder(tmp_path, _teacher(0).model.model, batch_size_only, 3, 0, False) == folder


REOPEN = """
import sys, torch
from engine.data import teacher_cache
teacher_cache.IN_MEMORY_LIMIT = 0
cached, built = teacher_cache.load_or_build(__import__("pathlib").Path(sys.argv[1]), ["fc"], None, None, False,
                                            torch.device("cpu"), lambda f: None)
assert built == [] and not isinstance(cached.arrays["fc"], torch.Tensor)
print(",".join(f"{v:.6f}" for v in cached.lookup(torch.tensor([3]), torch.tensor([1]), torch.device("cpu"))["fc"][0]))
"""


def test_memory_mapped_cache_is_read_by_another_process(tmp_path: Path) -> None:
    cached, _, folder = _build(tmp_path, _teacher(), DIGITS.model_copy(update={"augment": "crop"}))
    proc = subprocess.run([sys.executable, "-c", REOPEN, str(folder)], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = [float(v) for v in proc.stdout.strip().split(",")]
    ours = cached.lookup(torch.tensor([3]), torch.tensor([1]), torch.device("cpu"))["fc"][0]
    assert theirs == pytest.approx(ours.tolist(), abs=1e-5)


def test_augmented_views_are_drawn_the_same_for_the_same_seed_and_epoch() -> None:
    bundle = load_dataset(DIGITS.model_copy(update={"augment": "flip_crop"}))
    views = make_views(bundle.train, "flip_crop", 4, seed=0)
    assert not torch.equal(views[0], views[1])  # different views really differ

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = view_batches(bundle.train, views, 64, torch.Generator().manual_seed(seed))
        return [(b.position, b.view) for b in batches]

    same, again, other = epoch(3), epoch(3), epoch(4)
    assert all(torch.equal(p, q) and torch.equal(v, w) for (p, v), (q, w) in zip(same, again))
    assert not all(torch.equal(v, w) for (_, v), (_, w) in zip(same, other))
    first = next(view_batches(bundle.train, views, 8, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(first.x, views[first.view, first.position])


def test_training_from_the_cache_matches_training_live(home: Path) -> None:
    def run(run_id: str, enabled: bool) -> NullReporter:
        reporter = NullReporter()
        execute_run(parse_spec(tiny_spec_dict(teacher_cache={"enabled": enabled})), run_id, home, reporter)
        return reporter

    live, cached = run("live", False), run("cached", True)
    assert any("teacher cache: t built" in m for _, m in cached.events)
    assert cached.series("loss/path:t-kd") == pytest.approx(live.series("loss/path:t-kd"), rel=1e-4, abs=1e-6)
    assert cached.series("acc/test") == pytest.approx(live.series("acc/test"), abs=2e-3)
    again = run("again", True)
    assert any("teacher cache: t reused" in m for _, m in again.events)
    assert again.series("loss/total") == cached.series("loss/total")
