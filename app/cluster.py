"""Where runs execute: local workers, Ray drivers and the nodes their trials run on, read from the store.

The store is the dashboard's only source to draw a page. *Ask a Ray cluster* asks one for its nodes' CPUs and GPUs
through `python -m engine cluster` in a child process: joining a cluster from the dashboard's own process would
make it listen on Ray's ports on every interface (which app/launch.py's exposure check then refuses).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from engine.store import STALE_AFTER_SECONDS, RunRow, Store

DRIVER_PREFIX = "ray-driver-"
ASK_TIMEOUT_S = 90  # joining a cluster imports Ray and may start a core worker: seconds, not minutes
ROOT = Path(__file__).resolve().parents[1]
NODE_COLUMNS = ["node", "executor", "running", "devices"]


@dataclass
class ClusterSummary:
    local_workers: int = 0
    ray_drivers: int = 0
    ray_queued: int = 0  # a Ray run waiting for a slot (its trial has not reported where it runs)
    ray_running: int = 0
    nodes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NODE_COLUMNS))
    addresses: list[str] = field(default_factory=list)  # the clusters Ray runs were launched on

    @property
    def empty(self) -> bool:
        return not (self.local_workers or self.ray_drivers or self.ray_queued or self.ray_running)


def _trial_started(run: RunRow) -> bool:
    return run.status == "running" and "trial_id" in (run.placement or {})


def _node_rows(running: list[RunRow]) -> pd.DataFrame:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in running:
        placement = run.placement or {}
        node = str(placement.get("node") or "?")
        if placement.get("ip") and placement["ip"] != node:
            node = f"{node} ({placement['ip']})"
        row = rows.setdefault((node, run.executor), {"node": node, "executor": run.executor, "running": 0,
                                                     "devices": set()})
        row["running"] += 1
        row["devices"].add(str(placement.get("devices") or "?"))
    records = [{**row, "devices": ", ".join(sorted(row["devices"]))} for row in rows.values()]
    return pd.DataFrame.from_records(records, columns=NODE_COLUMNS)


def _address_label(address: Any) -> str:
    return "a Ray instance on its driver's machine" if address in (None, "", "local") else str(address)


def cluster_summary(store: Store) -> ClusterSummary:
    """Live workers and drivers (fresh heartbeats), Ray runs queued or running, and the nodes running runs now."""
    workers = [w["id"] for w in store.live_workers(STALE_AFTER_SECONDS)]
    active = store.list_runs(statuses=("queued", "running"))
    ray_runs = [run for run in active if run.executor == "ray"]
    placed = [run for run in active if run.status == "running" and run.placement
              and (run.executor != "ray" or _trial_started(run))]
    addresses = {_address_label((run.placement or {}).get("address")) for run in ray_runs}
    return ClusterSummary(
        local_workers=sum(not w.startswith(DRIVER_PREFIX) for w in workers),
        ray_drivers=sum(w.startswith(DRIVER_PREFIX) for w in workers),
        ray_queued=sum(not _trial_started(run) for run in ray_runs),
        ray_running=sum(_trial_started(run) for run in ray_runs),
        nodes=_node_rows(placed),
        addresses=sorted(addresses),
    )


def ask_cluster(address: str, home: Path) -> dict[str, Any]:
    """engine.executors.ray_cluster.cluster_state of the cluster at ``address``, asked by a child process; its "error"
    is one line when nothing answers, the child fails or it takes longer than ASK_TIMEOUT_S."""
    command = [sys.executable, "-m", "engine", "cluster", "--address", address]
    try:
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PATHSCOPE_HOME": str(home)},
                              capture_output=True, text=True, timeout=ASK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"Ray address {address}: no answer within {ASK_TIMEOUT_S} s", "nodes": []}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"Ray address {address}: the cluster query failed ({last})", "nodes": []}
