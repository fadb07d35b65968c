"""One rank of a DDP run: engine.runner.execute_run with a GroupReducer in the training loop.

Rank 0 is the run's one writer: metrics, events, progress, checkpoints and the exported student, under the
attempt token of the claim the launching process holds. The other ranks report to a ``SilentReporter``. Rank 0
also goes first through the teachers and the teacher cache (training inline teachers, building cache files) while
the others wait at a barrier, then read what it wrote. ``train_rank`` needs only a joined process group, so a Ray
TorchTrainer can call it per worker as torchrun's entry (engine/distributed/launch.py) does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.distributed.checks import distributed_errors, uses_gpus
from engine.distributed.group import GroupReducer, start_group
from engine.reporting import StoreReporter
from engine.runner import execute_run
from engine.spec import RunSpec, SpecError
from engine.store import Store
from engine.train import NullReporter


class SilentReporter(NullReporter):
    """What a rank other than 0 reports to: nothing is kept (only rank 0 writes the run's store rows)."""

    def log(self, phase, step, epoch, values):
        pass

    def log_array(self, phase, step, epoch, key, recorded):
        pass

    def event(self, level, message, data=None):
        pass


def train_rank(spec: RunSpec, run_id: str, home: Path, token: str | None) -> dict[str, Any] | None:
    """Train this rank's part of the run; rank 0 returns the run's result (what execute_run returns), others None."""
    errors = distributed_errors(spec)
    if errors:
        raise SpecError(errors)
    reducer = GroupReducer(start_group(uses_gpus(spec)))
    reporter = StoreReporter(Store(home), run_id, token=token) if reducer.writes else SilentReporter()
    try:
        result = execute_run(spec, run_id, home, reporter, reducer)
    except BaseException:
        if isinstance(reporter, StoreReporter):
            reporter.drop_unflushed()  # as the worker does: after a failure nothing more is written
        raise
    reporter.flush()
    return result
