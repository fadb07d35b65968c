"""Many teachers and paths: one loss series per path in the store, each teacher run once per step."""
from __future__ import annotations

import threading
from pathlib import Path

import torch

from engine.data import load_dataset
from engine.data.bundle import iterate_batches
from engine.paths.base import StepContext
from engine.runner import build_learner, prepare_teacher
from engine.spec import load_spec, spec_to_yaml
from engine.store import Store
from engine.train import NullReporter
from engine.worker import execute_claimed
from tests.conftest import ROOT

SPEC = ROOT / "assets" / "configs" / "digits_multi.yaml"


def test_two_teachers_six_paths_train_and_log_one_series_per_path(home: Path) -> None:
    spec = load_spec(SPEC)
    assert len(spec.teachers) == 2 and len({p.distiller for p in spec.paths}) >= 5
    store = Store(home)
    run = store.claim_run("test", store.create_run(spec_to_yaml(spec), spec.name))
    result = execute_claimed(store, run, threading.Event())
    assert result is not None, store.get_run(run.id).error
    assert result["test_acc"] > 0.5
    logged = {r["key"] for r in store.metrics(run.id, phase="main")}
    for path in spec.paths:
        series = store.metrics(run.id, keys=[f"loss/path:{path.id}"], phase="main")
        assert len(series) >= 10, path.id
        assert all(torch.isfinite(torch.tensor(r["value"])) for r in series)
        assert f"weight/path:{path.id}" in logged


def test_each_frozen_teacher_runs_once_per_step_in_eval_mode(home: Path) -> None:
    spec = load_spec(SPEC)
    bundle = load_dataset(spec.dataset)
    cpu = torch.device("cpu")
    teachers = {t.id: prepare_teacher(t, spec, bundle, home, cpu, NullReporter(), lambda _f: None)[0]
                for t in spec.teachers}
    learner = build_learner(spec, bundle, teachers, cpu).train()
    calls = {tid: 0 for tid in teachers}
    for tid, frozen in learner.teachers.items():  # the tapped graph each step runs
        frozen.model.register_forward_hook(lambda *_args, tid=tid: calls.__setitem__(tid, calls[tid] + 1))
    x, y, index = next(iterate_batches(bundle.train, 32, shuffle=False, generator=None))
    losses, _ = learner.terms(x, y, StepContext(labels=y, epoch=0, step=0, index=index))
    assert calls == {"cnn": 1, "mlp": 1}  # three paths read cnn and three read mlp
    assert all(not m.training for m in teachers.values())
    assert all(not p.requires_grad for m in teachers.values() for p in m.parameters())
    assert sorted(losses) == sorted(["task", *(f"path:{p.id}" for p in spec.paths)])
    losses["path:cnn-fitnet-conv1"].backward()
    regressor_grads = [p.grad for p in learner.distillers["cnn-fitnet-conv1"].parameters()]
    assert regressor_grads and all(g is not None for g in regressor_grads)  # adapters train with the student
