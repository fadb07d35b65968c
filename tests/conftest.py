"""Shared fixtures: every test gets its own workspace; nothing touches ./workspace."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: real processes and faults, tens of seconds each "
                                       "(pytest -m 'not slow' leaves them out)")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspace, also exported to subprocesses through PATHSCOPE_HOME."""
    ws = tmp_path / "workspace"
    monkeypatch.setenv("PATHSCOPE_HOME", str(ws))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    from engine.store import init_workspace

    init_workspace(ws)
    return ws


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace folder not created yet, as the dashboard first finds it (pages must cope with that)."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("PATHSCOPE_HOME", str(ws))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    return ws


@pytest.fixture
def finished_run(workspace: Path) -> str:
    """One finished synthetic run (tests/synthetic_runs.py) in ``workspace``: what most page tests open."""
    from synthetic_runs import add_finished_run

    return add_finished_run(workspace)


def engine_cli(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m engine ...` in a subprocess with the test's environment."""
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), check=check)


def tiny_spec_dict(**overrides) -> dict:
    """A digits run that trains in a second or two: MLP teacher trained inline, MLP student, one KD path."""
    spec = {
        "name": "tiny",
        "dataset": {"name": "digits", "batch_size": 64},
        "teachers": [{"id": "t", "arch": "mlp", "arch_params": {"hidden": [32]},
                      "source": {"kind": "train", "epochs": 2}}],
        "student": {"arch": "mlp", "arch_params": {"hidden": [16]}},
        "paths": [{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
        "epochs": 2,
        "seed": 0,
        "log_every": 5,
    }
    spec.update(overrides)
    return spec


#: four paths of three distillers over the two teachers of two_teacher_spec
TWO_TEACHER_PATHS = [
    {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
    {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "mlp-rkd", "teacher": "mlp", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"},
]


def two_teacher_spec(weighting: dict, paths: list[dict], epochs: int = 2):
    """Two inline teachers (small CNN `cnn`, MLP `mlp`), a small CNN student and the given paths."""
    from engine.spec import parse_spec

    source = {"kind": "train", "epochs": 2}
    return parse_spec(tiny_spec_dict(
        teachers=[{"id": "cnn", "arch": "small_cnn", "arch_params": {"width": 8}, "source": source},
                  {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [32]}, "source": source}],
        student={"arch": "small_cnn", "arch_params": {"width": 8}}, paths=paths, weighting=weighting, epochs=epochs))


def step_ctx(step: int = 0):
    """A minimal step context for weighting and method unit tests on hand-made losses."""
    import torch

    from engine.paths.base import StepContext

    return StepContext(labels=torch.zeros(1, dtype=torch.long), epoch=0, step=step, index=torch.zeros(1))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray cluster (2 CPUs) for the module that uses it (one per pytest run: tests/test_ray_executor.py),
    shut down at its end: a Ray driver's core worker listens on every interface, which the dashboard's exposure
    check rightly refuses, so page tests after it in this process would see a refusing app. Ray writes its auth token under HOME, so HOME points
    at a temporary folder while it starts (its processes keep it); then this process and the drivers it spawns
    find the token through RAY_AUTH_TOKEN_PATH, and HOME is the user's again for the other tests."""
    ray = pytest.importorskip("ray")
    saved = {name: os.environ.get(name) for name in ("HOME", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    ray_home = tmp_path_factory.mktemp("ray-home")
    os.environ["HOME"] = str(ray_home)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    finally:
        _restore_env({"HOME": saved["HOME"]})
    token = ray_home / ".ray" / "auth_token"
    if token.exists():
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    try:
        yield ray
    finally:
        ray.shutdown()
        _restore_env(saved)


def _restore_env(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
