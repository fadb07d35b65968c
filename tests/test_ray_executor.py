"""The Ray executor on one local cluster (tests/conftest.py ray_cluster): a sweep whose trials report through Tune
and a driver that alone writes the store; a killed trial resumes to the same result, cancel stops one, bad
cluster, resources and storage are refused with one line naming them."""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from engine.executors import ExecutorError, launch
from engine.executors.ray_cluster import alive_nodes, check_node_storage, cluster_state
from engine.executors.ray_tune import SweepLedger, drive
from engine.runtime import LostClaim
from engine.spec import parse_spec, spec_to_yaml
from engine.store import FINAL_STATUSES, SCHEMA_VERSION, Store, init_workspace
from engine.vocabulary import MAIN_PHASE, SYSTEM_PREFIX
from engine.worker import Heartbeat, execute_claimed
from tests.conftest import tiny_spec_dict

TIMINGS = ("time/", "throughput/")
RAY_PLACEMENT = {"executor": "ray", "address": "local"}


def _spec(**overrides):
    return parse_spec(tiny_spec_dict(**overrides))


def _run_locally(store: Store, spec) -> str:
    """The same spec trained in this process by the local worker path: the reference a trial must match."""
    run_id = store.create_run(spec_to_yaml(spec), spec.name)
    execute_claimed(store, store.claim_run("reference", run_id), threading.Event())
    return run_id


def _series(store: Store, run_id: str, phase: str = MAIN_PHASE) -> dict[tuple[int, int, str], float]:
    """Every metric row of the phase by (step, epoch, key); timings, which no two runs share, count by presence
    (as 0); system metrics, sampled by the clock, not at all. Values match to float32 rounding: a Ray worker runs
    BLAS on its one CPU, the test process on two."""
    rows = [r for r in store.metrics(run_id, phase=phase) if not r["key"].startswith(SYSTEM_PREFIX)]
    keyed = {(r["step"], r["epoch"], r["key"]): 0.0 if r["key"].startswith(TIMINGS) else r["value"] for r in rows}
    assert len(keyed) == len(rows), "a metric was written twice (a resumed attempt's rows were not truncated)"
    return keyed


@pytest.fixture
def store(home: Path) -> Store:
    store = Store(home)
    yield store
    store.close()


def _wait_until_final(store: Store, run_ids: list[str], timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [store.get_run(run_id) for run_id in run_ids]
        if all(r.status in FINAL_STATUSES for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"still not ended after {timeout_s} s: {[(r.id, r.status) for r in runs]}")


def test_a_four_run_sweep_writes_every_metric_and_where_it_ran(ray_cluster, store: Store) -> None:
    """Launched as the Configure page does: a background driver process joins the cluster and drives the group."""
    specs = [_spec(name=f"w-{w}", weighting={"name": w}, seed=seed)
             for w in ("equal", "uncertainty") for seed in (0, 1)]
    address = ray_cluster.get_runtime_context().gcs_address
    launched = launch(store, specs, executor="ray", address=address, wait=False)
    assert launched.driver_pid and {store.get_run(r).executor for r in launched.run_ids} == {"ray"}
    runs = _wait_until_final(store, launched.run_ids, timeout_s=150)
    assert [r.status for r in runs] == ["done"] * 4, [r.error for r in runs]
    assert {r.group_id for r in runs} == {launched.group_id}
    for run in runs:
        placement = run.placement
        assert placement["executor"] == "ray" and placement["devices"] == "cpu" and placement["trial_id"]
        assert placement["node"] and placement["pid"] != os.getpid()
        assert Path(run.result["student_file"]).is_file()  # registered by path, under the storage (the workspace)
    # Every metric the trial logged arrived, with the values the same run has when trained here.
    reference = _run_locally(store, specs[1])
    assert store.get_run(reference).placement["executor"] == "local"
    expected = _series(store, reference)
    assert len(expected) > 20
    assert _series(store, launched.run_ids[1]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert runs[1].result["test_acc"] == store.get_run(reference).result["test_acc"]
    state = cluster_state(None, store)
    assert state["error"] is None and state["cpus"] == 2 and state["trials"] == {"queued": [], "running": []}


class _Saboteur(threading.Thread):
    """Watches the store from its own connection: kills the first trial's process once an epoch's checkpoint
    exists (its second epoch's rows arrived), and cancels the second run once it trains."""

    def __init__(self, home: Path, kill: str, cancel: str) -> None:
        super().__init__(daemon=True)
        self.store, self.kill, self.cancel = Store(home), kill, cancel
        self.killed_pid: int | None = None
        self.killed_at_epoch: int | None = None
        self.cancelled = False
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05) and not (self.killed_pid and self.cancelled):
            if self.killed_pid is None:
                self._maybe_kill()
            if not self.cancelled and self._epochs(self.cancel) >= 1:
                self.store.request_cancel(self.cancel)
                self.cancelled = True
        self.store.close()

    def _epochs(self, run_id: str) -> int:
        row = self.store.con.execute("SELECT MAX(epoch) FROM metrics WHERE run_id=? AND phase=?"
                                     " AND key='acc/val'", (run_id, MAIN_PHASE)).fetchone()
        return -1 if row[0] is None else row[0] + 1

    def _maybe_kill(self) -> None:
        run = self.store.get_run(self.kill)
        epochs = self._epochs(self.kill)
        if run.status == "running" and epochs >= 2 and (run.placement or {}).get("pid"):
            os.kill(run.placement["pid"], signal.SIGKILL)
            self.killed_pid, self.killed_at_epoch = run.placement["pid"], epochs


def test_the_dashboard_asks_a_cluster_for_its_nodes_from_a_child_process(ray_cluster, home: Path) -> None:
    """Home's *Ask the cluster*: `python -m engine cluster` joins it, so the dashboard's process never listens on
    Ray's ports."""
    from app.cluster import ask_cluster

    state = ask_cluster(ray_cluster.get_runtime_context().gcs_address, home)
    assert state["error"] is None
    assert state["cpus"] == 2 and all(node["alive"] for node in state["nodes"]) and len(state["nodes"]) == 1


@pytest.fixture(scope="module")
def faults(ray_cluster, tmp_path_factory):
    """One drive of two long runs: the first's trial process is killed mid-run, the second is cancelled."""
    home = init_workspace(tmp_path_factory.mktemp("faults") / "workspace")
    store = Store(home)
    long_run = _spec(name="killed", epochs=15)
    reference = _run_locally(store, long_run)  # also trains the inline teacher both trials then reuse
    run_ids = [store.create_run(spec_to_yaml(spec), spec.name, placement=RAY_PLACEMENT)
               for spec in (long_run, _spec(name="cancelled", epochs=400))]
    saboteur = _Saboteur(home, *run_ids)
    saboteur.start()
    started = time.monotonic()
    statuses = drive(store, run_ids)
    saboteur.halt.set()
    yield store, reference, run_ids, statuses, saboteur, time.monotonic() - started
    store.close()


def test_a_killed_trial_resumes_from_its_checkpoint_to_the_same_result(faults) -> None:
    store, reference, (killed, _), statuses, saboteur, _ = faults
    assert saboteur.killed_pid is not None, "the trial ended before its process could be killed"
    assert statuses[killed] == "done"
    run = store.get_run(killed)
    assert run.attempts == 2 and run.placement["pid"] != saboteur.killed_pid
    messages = [e["message"] for e in store.events(killed)]
    assert any("process died" in m for m in messages)
    assert any(m.startswith(f"resumed {MAIN_PHASE} from the checkpoint of epoch") for m in messages)
    assert run.result["test_acc"] == store.get_run(reference).result["test_acc"]
    assert run.result["val_acc"] == store.get_run(reference).result["val_acc"]
    # The rows logged after the checkpoint by the killed attempt were dropped and logged again: one series.
    assert _series(store, killed) == pytest.approx(_series(store, reference), rel=1e-5, abs=1e-6)


def test_cancel_in_the_store_stops_the_trial(faults) -> None:
    store, _, (_, cancelled), statuses, saboteur, seconds = faults
    assert saboteur.cancelled and statuses[cancelled] == "cancelled"
    run = store.get_run(cancelled)
    assert run.status == "cancelled" and run.progress < 0.5  # 400 epochs would take minutes
    assert seconds < 90


def test_a_report_of_a_replaced_attempt_is_never_written(home: Path, store: Store) -> None:
    run_id = store.create_run(spec_to_yaml(_spec()), "fenced", placement=RAY_PLACEMENT)
    old_token = store.claim_run("driver", run_id).attempt_token
    heartbeat = Heartbeat(home, "driver")
    ledger = SweepLedger(store, {run_id: old_token}, heartbeat, RAY_PLACEMENT)

    def report(attempt: str, step: int) -> None:
        ops = [["metrics", [[MAIN_PHASE, step, 0, "loss", float(step)]]]]
        ledger.report(run_id, {"attempt": attempt, "ops": ops, "end": None})

    report("first", 0)
    ledger.replace(run_id, "its process died")  # Tune's on_trial_recover
    report("first", 1)  # late, from the process that died: dropped
    report("second", 2)
    report("third", 3)  # a newer start replaces the second without a recover call
    report("second", 4)
    assert [r["step"] for r in store.metrics(run_id)] == [0, 2, 3]
    run = store.get_run(run_id)
    assert run.attempts == 3 and run.attempt_token not in (old_token, None)
    with pytest.raises(LostClaim):  # the store refuses the replaced attempts' token too
        store.add_metrics(run_id, [(MAIN_PHASE, 9, 0, "loss", 9.0)], token=old_token)
    assert heartbeat.runs == {run_id: run.attempt_token}
    heartbeat.store.close()


def test_runs_of_a_dead_driver_end_interrupted_and_local_workers_leave_ray_runs(store: Store) -> None:
    ray_run = store.create_run(spec_to_yaml(_spec()), "on ray", placement=RAY_PLACEMENT)
    waiting = store.create_run(spec_to_yaml(_spec()), "queued for ray", placement=RAY_PLACEMENT)
    assert store.claim_run("driver", ray_run) is not None
    store.con.execute("UPDATE runs SET heartbeat_at=0 WHERE id=?", (ray_run,))  # the driver stopped beating
    store.con.commit()
    assert store.claim_run("local-worker") is None  # a run reserved for a Ray driver is not a local worker's
    assert store.reclaim_stale_runs(60, 3) == []
    assert store.get_run(ray_run).status == "interrupted"
    assert store.get_run(waiting).status == "queued"
    assert store.resume_run(ray_run) and store.get_run(ray_run).placement is None  # resumes locally
    assert store.claim_run("local-worker").id == ray_run


def test_an_unreachable_or_client_address_is_named(home: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # what auto finds (a cluster file left by a dead cluster, too)
    for address in ("127.0.0.1:9", "ray://127.0.0.1:9"):
        with pytest.raises(ExecutorError, match=re.escape(f"Ray address {address}: nothing answers at 127.0.0.1:9")):
            launch(store, [_spec()], executor="ray", address=address)
    # Ray spells a local host by this machine's address
    with pytest.raises(ExecutorError, match=r"Ray address auto \(found [\d.]+:9\): nothing answers at [\d.]+:9 "):
        launch(store, [_spec()], executor="ray", address="auto")
    with pytest.raises(ExecutorError, match="expected auto, host:port or ray://host:port"):
        launch(store, [_spec()], executor="ray", address="head-node")
    assert store.list_runs() == []
    with socket.create_server(("127.0.0.1", 0)) as listening:  # something answers, but Ray Client cannot drive
        address = f"ray://127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(ExecutorError, match=re.escape(f"Ray address {address}: a ray:// (Ray Client) address")):
            launch(store, [_spec()], executor="ray", address=address)
    state = cluster_state("127.0.0.1:9", store)  # the dashboard's panel says why it shows no node
    assert state["nodes"] == [] and state["error"].startswith("Ray address 127.0.0.1:9: nothing answers")


@pytest.mark.parametrize("asks, named", [
    ({"resources": {"gpus": 1}}, "resources.gpus: run 'big' asks for 1 GPU"),
    ({"resources": {"cpus": 64}}, "resources.cpus: run 'big' asks for 64 CPU"),
    ({"distributed": {"nproc": 2}}, "distributed.nproc: run 'big' asks for 2 processes, but a Ray trial runs one"),
])
def test_resources_no_node_has_are_named(ray_cluster, store: Store, asks, named) -> None:
    with pytest.raises(ExecutorError, match=named):
        launch(store, [_spec(), _spec(name="big", **asks)], executor="ray")
    assert store.list_runs() == []


def test_storage_a_node_cannot_write_is_named(ray_cluster, tmp_path: Path, store: Store) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExecutorError, match=re.escape(f"storage {blocker / 'runs'}: not writable from the driver")):
        launch(store, [_spec()], executor="ray", storage=blocker / "runs")
    assert store.list_runs() == []
    node = alive_nodes()[0]
    with pytest.raises(ExecutorError, match=re.escape(f"storage {blocker / 'x'}: node {node.ip} cannot write it")):
        check_node_storage(blocker / "x", [node])


def test_reports_are_plain_batched_values_the_driver_writes_in_order(store: Store) -> None:
    """What a trial sends is JSON-able (no tensor, no array object), few sends for many rows, and the driver's
    writes give the store what a StoreReporter would."""
    import json

    import numpy as np

    from engine.reporting import OpsReporter, apply_ops
    from engine.telemetry import Recorded

    sent: list[list] = []
    reporter = OpsReporter(sent.append)
    run_id = store.create_run(spec_to_yaml(_spec()), "ops")
    token = store.claim_run("driver", run_id).attempt_token
    weights = Recorded(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([4, 9, 2]), ["a", "b"])
    for step in range(100):
        reporter.log(MAIN_PHASE, step, 0, {"loss/total": step / 10, "acc/train": 0.5})
        reporter.progress(step / 100, MAIN_PHASE)
    reporter.log_array(MAIN_PHASE, 99, 0, "weights", weights)
    reporter.truncate(MAIN_PHASE, -1)  # a restart from scratch: drops what came before it, keeps what follows
    reporter.log(MAIN_PHASE, 0, 0, {"loss/total": 7.0})
    reporter.event("info", "epoch done", {"epoch": 0})
    reporter.flush()
    assert 1 <= len(sent) <= 3
    for ops in sent:
        apply_ops(store, run_id, json.loads(json.dumps(ops)), token)
    assert [(r["step"], r["key"], r["value"]) for r in store.metrics(run_id)] == [(0, "loss/total", 7.0)]
    assert store.arrays(run_id, "weights") == []  # logged before the truncate: dropped with the rows
    assert store.events(run_id)[-1]["message"] == "epoch done"
    assert store.get_run(run_id).progress == pytest.approx(0.99)
    reporter.log_array(MAIN_PHASE, 100, 1, "weights", weights)
    reporter.flush()
    apply_ops(store, run_id, json.loads(json.dumps(sent[-1])), token)
    (stored,) = store.arrays(run_id, "weights")
    assert np.array_equal(stored.values, weights.values) and stored.values.dtype == np.float32
    assert stored.index.tolist() == [4, 9, 2] and stored.columns == ["a", "b"]


def test_a_version_2_workspace_gains_placement_and_keeps_its_runs(home: Path) -> None:
    store = Store(home)
    run_id = store.create_run(spec_to_yaml(_spec()), "old run")
    store.con.executescript("ALTER TABLE runs DROP COLUMN placement_json;"
                            "UPDATE meta SET value='2' WHERE key='schema_version';")
    store.close()
    init_workspace(home)
    store = Store(home)
    assert store.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    run = store.get_run(run_id)
    assert run.name == "old run" and run.placement is None and run.executor == "local"
    store.set_placement(run_id, {"executor": "local", "node": "here", "devices": "cpu", "pid": 1})
    assert store.get_run(run_id).placement["node"] == "here"
    store.close()
