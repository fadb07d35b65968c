"""(c), (d), (e): PathScope's engine (engine.runner.execute_run) on the bench's tensors, timed per epoch.

Teachers load their saved weights (checkpoint sources: nothing is trained inline) and the teacher
cache is built before the loop, so an epoch is the student's distillation steps alone. Epochs are
timed from the reporter calls the loop makes: ``check_stop`` opens each step and the main phase's
``progress`` closes it, so evaluation and checkpoints between epochs fall outside.
"""
from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import BATCH_SIZE, Workload
from engine.runner import execute_run
from engine.spec import RunSpec, parse_spec
from engine.train import MAIN_PHASE, NullReporter
from engine.vocabulary import TIME_SECTIONS

CACHE_EVENT = re.compile(r"^teacher cache: (\S+) (built .+|reused) for .* in ([\d.]+) s")
SECTIONS = TIME_SECTIONS  # the step-time sections the loop logs as time/<section>


class EpochClock(NullReporter):
    """A NullReporter that also records the wall time of each main-phase training epoch."""

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.steps = 0
        self.started: float | None = None
        self.epoch_s: list[float] = []

    def check_stop(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def progress(self, fraction: float, phase: str) -> None:
        super().progress(fraction, phase)
        if phase != MAIN_PHASE:
            return
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0:
            self.epoch_s.append(time.perf_counter() - self.started)
            self.started = None


@dataclass
class EngineTiming:
    epoch_s: list[float]  # timed epochs (the first, warm-up epoch left out)
    cache_s: float | None  # building the teacher cache, before the timed epochs; None: every spot was reused
    shares: dict[str, float]  # % of logged step time per section, over the timed epochs

    @property
    def median_s(self) -> float:
        return statistics.median(self.epoch_s)


def teacher_entries(workload: Workload, ids: list[str]) -> list[dict]:
    chosen = [t for t in workload.teachers if t.id in ids]
    return [{"id": t.id, "arch": t.arch, "arch_params": t.params,
             "source": {"kind": "checkpoint", "path": str(workload.checkpoints[t.id])}} for t in chosen]


def single_kd_paths(workload: Workload) -> list[dict]:
    teacher = workload.teachers[0].id
    return [{"id": f"{teacher}-kd", "teacher": teacher, "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}]


def multi_paths(workload: Workload, feature_spots: tuple[str, str, str]) -> list[dict]:
    """Six paths from three teachers: KD on the logits of each, then at / fitnet / rkd on features."""
    ids = [t.id for t in workload.teachers]
    paths = [{"id": f"{tid}-kd", "teacher": tid, "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}
             for tid in ids]
    for tid, distiller, spot in zip(ids, ("at", "fitnet", "rkd"), feature_spots):
        paths.append({"id": f"{tid}-{distiller}", "teacher": tid, "distiller": distiller,
                      "teacher_spot": spot, "student_spot": spot})
    return paths


def run_spec(workload: Workload, paths: list[dict], weighting: str, epochs: int, diagnostics: bool) -> RunSpec:
    spec = {
        "name": f"bench {weighting}", "dataset": workload.dataset,
        "teachers": teacher_entries(workload, sorted({p["teacher"] for p in paths})),
        "student": {"arch": workload.student, "arch_params": workload.student_params},
        "paths": paths, "weighting": {"name": weighting}, "epochs": epochs, "device": "cpu",
        "teacher_cache": {"enabled": True},
    }
    if diagnostics:
        spec["diagnostics"] = {"enabled": True}  # every other field at its default cadence
    return parse_spec(spec)


def time_engine(workload: Workload, spec: RunSpec, home: Path, run_id: str) -> EngineTiming:
    clock = EpochClock(math.ceil(len(workload.bundle.train) / BATCH_SIZE))
    execute_run(spec, run_id, home, clock)
    return EngineTiming(clock.epoch_s[1:], _cache_seconds(clock.events), _section_shares(clock))


def _cache_seconds(events: list[tuple[str, str]]) -> float | None:
    """Seconds spent building teacher caches (None when each teacher's was reused from an earlier run)."""
    found = [m for m in (CACHE_EVENT.match(message) for _level, message in events) if m]
    built = [float(m.group(3)) for m in found if m.group(2).startswith("built")]
    return sum(built) if built else None


def _section_shares(clock: EpochClock) -> dict[str, float]:
    """Share of each time/* section of all step time after the warm-up epoch.

    A logged time/* value is the mean over the steps since the previous log, so each is weighted
    by the steps it covers (the first log of a phase covers one step, the others log_every).
    """
    logs: dict[int, dict[str, float]] = {}  # step -> section -> mean ms
    epochs: dict[int, int] = {}
    for phase, step, epoch, key, value in clock.rows:
        section = key[len("time/"):]
        if phase == MAIN_PHASE and key.startswith("time/") and section in SECTIONS:
            logs.setdefault(step, {})[section] = value
            epochs[step] = epoch
    totals = dict.fromkeys(SECTIONS, 0.0)
    previous = -1
    for step in sorted(logs):
        if epochs[step] > 0:
            for section, value in logs[step].items():
                totals[section] += value * (step - previous)
        previous = step
    whole = sum(totals.values())
    return {s: 100 * t / whole for s, t in totals.items()} if whole else {}
