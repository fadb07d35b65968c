"""The local executor: runs are queued in the store for the workers of this machine (python -m engine worker,
or the ones the dashboard starts), as before executors existed."""
from __future__ import annotations

from engine.comparison import queue_group
from engine.executors.base import Launch
from engine.spec import RunSpec
from engine.store import Store


def launch_local(store: Store, specs: list[RunSpec], group_id: str) -> Launch:
    return Launch(group_id, queue_group(store, specs, group_id), "local")
