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


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspace, also exported to subprocesses through PATHSCOPE_HOME."""
    ws = tmp_path / "workspace"
    monkeypatch.setenv("PATHSCOPE_HOME", str(ws))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    from engine.store import init_workspace

    init_workspace(ws)
    return ws


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
