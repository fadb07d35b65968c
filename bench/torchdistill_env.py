"""(f) torchdistill in its own virtual environment (bench/.venv-torchdistill), installed once and reused.

torchdistill pins its own dependencies, so it never goes into the project's .venv. The install is
outside every timing; when it fails, the reason is reported and the row reads n/a.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.workload import BATCH_SIZE, Workload

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-torchdistill"
PYTHON = VENV / "bin" / "python"
# The project's torch and torchvision (on this machine's disk), so the venv does not download another torch.
REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "torchdistill"]
INSTALL_TIMEOUT_S = 1800


@dataclass
class TorchdistillTiming:
    epoch_s: list[float] | None  # timed epochs (warm-up left out); None when it could not run
    note: str  # version, or why there is no number

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.epoch_s) if self.epoch_s else None


def _ready() -> bool:
    if not PYTHON.exists():
        return False
    return subprocess.run([str(PYTHON), "-c", "import torchdistill"], capture_output=True).returncode == 0


def ensure_venv() -> str | None:
    """Create the venv and install torchdistill unless already there; None on success, else why not."""
    if _ready():
        return None
    print(f"installing torchdistill into {VENV} (first time only, a few minutes)", file=sys.stderr)
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(PYTHON), "-m", "pip", "install", "-q", *REQUIREMENTS]]
    for command in steps:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command[-3:])}` took over {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            return f"`{' '.join(command[-3:])}` failed: {_last_line(done.stderr)}"
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and "is ignored" not in line]
    return lines[-1] if lines else "no error output"


def time_torchdistill(workload: Workload, epochs: int, scratch: Path) -> TorchdistillTiming:
    """Runs bench/torchdistill_kd.py on the workload's train tensors and first teacher, ``epochs`` epochs."""
    problem = ensure_venv()
    if problem:
        return TorchdistillTiming(None, f"n/a: {problem}")
    data = scratch / "torchdistill-data.pt"
    train = workload.bundle.train
    torch.save({"x": train.x, "y": train.y}, data)
    command = [str(PYTHON), str(BENCH / "torchdistill_kd.py"), "--data", str(data),
               "--teacher", str(workload.checkpoints[workload.teachers[0].id]), "--epochs", str(epochs),
               "--batch-size", str(BATCH_SIZE)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return TorchdistillTiming(None, f"n/a: torchdistill_kd.py failed: {_last_line(done.stderr)}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return TorchdistillTiming(result["epoch_s"][1:], f"torchdistill {result['torchdistill']}, same models and data")
