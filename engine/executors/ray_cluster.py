"""The Ray cluster as the Ray executor sees it: its address, its nodes, what a trial asks of them, whether its
storage folder is writable from every node, and its state for the dashboard's panel. Every check fails with an
ExecutorError of one line that names the setting at fault (--address, --storage, resources.*)."""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engine.executors.base import ExecutorError
from engine.executors.probe import write_problem
from engine.spec import RunSpec
from engine.store import Store

CONNECT_TIMEOUT_S = 3.0
STORAGE_CHECK_TIMEOUT_S = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ the cluster
@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    host: str
    ip: str
    alive: bool
    cpus: float
    gpus: float


def check_address(address: str | None) -> str | None:
    """The host:port to join, after checking something answers there: a one-line error rather than Ray's endless
    retries. None: no address, a new local instance is started."""
    if address is None:
        return None
    target = _auto_address() if address == "auto" else address
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"Ray address {address!r}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        found = f" (found {target})" if target != address else ""
        raise ExecutorError(f"Ray address {address}{found}: nothing answers at {host}:{port} "
                            f"({err.strerror or err}); start a cluster there (ray start --head) or pass another "
                            f"--address") from None
    if target.startswith("ray://"):
        # Under Ray Client, Tune runs the experiment in an actor on the cluster: its callbacks would run there,
        # away from this process's store.
        raise ExecutorError(f"Ray address {address}: a ray:// (Ray Client) address cannot drive a sweep, whose "
                            f"driver writes this workspace's store; run it on a node of the cluster with "
                            f"--address auto, or pass the head's host:6379")
    return target


def _auto_address() -> str:
    """What Ray's "auto" means here: RAY_ADDRESS, else the cluster `ray start` recorded on this machine (a file
    that outlives a cluster killed without `ray stop`, hence the check that follows)."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - Ray raises ConnectionError or ValueError here, by version
        found = None
    if not found:
        raise ExecutorError("Ray address auto: no Ray cluster was started on this machine (ray start --head) "
                            "and RAY_ADDRESS is not set; pass --address host:port")
    return found


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a local instance for this process when None; a process that
    already joined one keeps it (the tests' cluster)."""
    target = check_address(address)
    if ray.is_initialized():
        return
    try:
        # "local": a new instance even where `ray start` left a cluster file, which Ray would otherwise join
        ray.init(address=target or "local", include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExecutorError(f"Ray address {address or 'auto'}: cannot join the cluster ({first})") from None


def alive_nodes() -> list[NodeInfo]:
    return [NodeInfo(n["NodeID"], n.get("NodeManagerHostname", ""), n["NodeManagerAddress"], n["Alive"],
                     n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
            for n in ray.nodes() if n["Alive"]]


def trial_resources(spec: RunSpec, cluster_has_gpus: bool) -> dict[str, float]:
    """What one trial asks for: one GPU where the cluster has GPUs (unless the spec says otherwise), its CPUs."""
    gpus = spec.resources.gpus if spec.resources.gpus is not None else (1.0 if cluster_has_gpus else 0.0)
    return {"cpu": spec.resources.cpus, **({"gpu": gpus} if gpus else {})}


def check_resources(specs: list[RunSpec], nodes: list[NodeInfo]) -> list[dict[str, float]]:
    """Each spec's trial resources, or ExecutorError naming the first run no single node can hold."""
    if not nodes:
        raise ExecutorError("the Ray cluster has no alive node: start one (ray start) or pass another --address")
    for spec in specs:  # rank 0 of a DDP run writes the store itself, which a trial must not
        if spec.distributed.nproc > 1:
            raise ExecutorError(f"distributed.nproc: run {spec.name!r} asks for {spec.distributed.nproc} processes, "
                                f"but a Ray trial runs one; use --executor local for DDP runs")
    has_gpus = any(n.gpus > 0 for n in nodes)
    asked = [trial_resources(spec, has_gpus) for spec in specs]
    for name, res in zip((spec.name for spec in specs), asked):
        if res.get("gpu") and not has_gpus:
            raise ExecutorError(f"resources.gpus: run {name!r} asks for {res['gpu']:g} GPU(s) per trial but the Ray "
                                f"cluster has no GPU ({len(nodes)} CPU-only node(s)); set resources.gpus: 0")
        if not any(n.cpus >= res["cpu"] and n.gpus >= res.get("gpu", 0) for n in nodes):
            most = max(nodes, key=lambda n: (n.gpus, n.cpus))
            what = "resources.gpus" if res.get("gpu", 0) > most.gpus else "resources.cpus"
            raise ExecutorError(
                f"{what}: run {name!r} asks for {res['cpu']:g} CPU(s) and {res.get('gpu', 0):g} GPU(s) per trial but "
                f"no node of the Ray cluster has that much (the largest has {most.cpus:g} CPUs, {most.gpus:g} GPUs)")
    return asked


def max_concurrent(asked: list[dict[str, float]], nodes: list[NodeInfo]) -> int:
    """How many of the largest trials fit on the cluster at once (each trial on one node), at least one."""
    cpu = max(r["cpu"] for r in asked)
    gpu = max(r.get("gpu", 0.0) for r in asked)
    fits = sum(int(min(n.cpus // cpu, n.gpus // gpu if gpu else float("inf"))) for n in nodes)
    return max(fits, 1)


# ------------------------------------------------------------------------------------------------ storage
def check_storage(storage: Path, nodes: list[NodeInfo]) -> None:
    """The storage folder must be writable from the driver and from every alive node (a small task on each)."""
    problem = write_problem(str(storage))
    if problem:
        raise ExecutorError(f"storage {storage}: not writable from the driver ({problem}); pass --storage a folder "
                            f"every node of the cluster can write")
    check_node_storage(storage, nodes)


def check_node_storage(storage: Path, nodes: list[NodeInfo]) -> None:
    """A small task pinned to each node writes a file in the storage folder; ExecutorError names a node that
    cannot (a folder local to the driver's machine, a share not mounted there)."""
    probe = ray.remote(num_cpus=0)(write_problem)
    pending = {node.ip: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False))
               .remote(str(storage)) for node in nodes}
    for ip, ref in pending.items():
        try:
            problem = ray.get(ref, timeout=STORAGE_CHECK_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - a node that cannot run the probe cannot run trials either
            problem = f"the check did not run: {type(err).__name__}"
        if problem:
            raise ExecutorError(f"storage {storage}: node {ip} cannot write it ({problem}); pass --storage a folder "
                                f"every node of the cluster can write (a shared file system)")


# ------------------------------------------------------------------------------------------------ the dashboard
def cluster_state(address: str | None = "auto", store: Store | None = None) -> dict[str, Any]:
    """The cluster for a dashboard panel: {"address", "nodes": [{host, ip, alive, cpus, gpus}], "cpus", "gpus",
    "trials": {"queued": [run ids], "running": [run ids]}, "error": one line or None}. Trials come from the store:
    a Ray run is running once its trial reported where it runs, queued before (waiting for a slot)."""
    state: dict[str, Any] = {"address": address or "local", "nodes": [], "cpus": 0.0, "gpus": 0.0,
                             "trials": {"queued": [], "running": []}, "error": None}
    try:
        connect(address)
        state["nodes"] = [{"host": n["NodeManagerHostname"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
                           "cpus": n["Resources"].get("CPU", 0.0), "gpus": n["Resources"].get("GPU", 0.0)}
                          for n in ray.nodes()]
    except ExecutorError as err:
        state["error"] = str(err)
    alive = [n for n in state["nodes"] if n["alive"]]
    state["cpus"], state["gpus"] = sum(n["cpus"] for n in alive), sum(n["gpus"] for n in alive)
    if store is not None:
        for run in store.list_runs(statuses=("queued", "running")):
            if run.executor == "ray":
                started = run.status == "running" and "trial_id" in (run.placement or {})
                state["trials"]["running" if started else "queued"].append(run.id)
    return state

