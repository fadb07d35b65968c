"""Executors: where the runs of a group execute. ``local`` queues them for this machine's workers (the default);
``ray`` runs each as a Ray Tune trial driven by one process that alone writes the store
(engine/executors/ray_tune.py, imported only when used: Ray is slow to import).

    launch(store, specs, executor="ray", address="auto", wait=False)   # what the Configure page calls
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.executors.base import ExecutorError, Launch

if TYPE_CHECKING:  # this package stays light: a Ray node imports it to run the storage probe (probe.py)
    from engine.spec import RunSpec
    from engine.store import Store

__all__ = ["EXECUTORS", "ExecutorError", "Launch", "launch"]

#: name -> what it does (the CLI's --executor choices and the page's options)
EXECUTORS = {
    "local": "queue the runs for the workers of this machine",
    "ray": "run each run as a Ray Tune trial on a Ray cluster (--address), files on shared storage (--storage)",
}


def launch(store: "Store", specs: "list[RunSpec]", group_id: str | None = None, executor: str = "local",
           address: str | None = None, storage: str | Path | None = None, wait: bool = True,
           announce: Callable[[str, list[str]], None] | None = None) -> Launch:
    """Create a group of runs from validated specs and start them on ``executor``.

    local: queued for local workers (``wait`` does not apply). ray: with ``wait``, driven in this process until
    every trial ends (the CLI); without, a background driver process is started that keeps running when the
    caller exits (the dashboard), after the checks that need no cluster connection. ``address``: None starts
    a Ray instance for the sweep on this machine, "auto" joins the cluster `ray start` started here (or
    RAY_ADDRESS), "host:port" the cluster whose head is there (ray:// Ray Client addresses are refused).
    ``storage``: a folder every node can write (default: the workspace). ``announce(group id, run ids)`` is
    called once the runs exist, before a foreground sweep starts. Raises ExecutorError.
    """
    from engine.comparison import new_group_id

    if executor not in EXECUTORS:
        raise ExecutorError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    group_id = group_id or new_group_id()
    if executor == "local":
        from engine.executors.local import launch_local

        launched = launch_local(store, specs, group_id)
        if announce:
            announce(launched.group_id, launched.run_ids)
        return launched
    from engine.executors.ray_tune import launch_ray

    return launch_ray(store, specs, group_id, address, Path(storage) if storage else None, wait, announce)
