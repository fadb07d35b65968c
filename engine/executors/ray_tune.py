"""The Ray executor: each run of a group is a Ray Tune trial; one driver process writes the store.

The driver claims every run (so they show `running`, each under an attempt token), keeps their heartbeats fresh
while it lives (a driver that dies leaves them stale, and they end `interrupted` like any orphaned run), and runs
them through ``tune.Tuner``. A trial never opens the database: it executes the run against the storage folder
(checkpoints, teachers, caches; a workspace-shaped folder every node can reach) and sends what it reports as small
batches of plain values through ``ray.tune.report`` (engine.reporting.OpsReporter). ``SweepLedger``, called by a
Tune callback in the driver, writes them with the run's token.

Faults: a trial whose process dies is restarted by Tune (FailureConfig) and resumes from the last checkpoint in
the storage folder. Each start of a trial sends its own attempt id; once a newer attempt reports, or Tune
declares the old one failed, the old one's reports are dropped, and the store token is renewed so nothing of it
can land. Cancel (store.request_cancel) is seen by a Tune Stopper at the trial's next report.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from engine.executors.base import ExecutorError, Launch
from engine.executors.probe import write_problem
from engine.executors.ray_cluster import (
    REPO_ROOT, alive_nodes, check_address, check_resources, check_storage, connect, max_concurrent,
)
from engine.reporting import OpsReporter, apply_ops
from engine.runner import execute_run
from engine.runtime import NonFiniteLoss, resolve_device
from engine.spec import RunSpec, spec_from_yaml, spec_to_yaml
from engine.store import Store
from engine.worker import Heartbeat, failure_message, record_writes
from engine.workspace import FileFence, fenced_files

log = logging.getLogger("pathscope.ray")

#: the key of a trial's report that holds PathScope's payload {attempt, ops, end}
REPORT_KEY = "pathscope"
#: process deaths Tune restarts a trial after (errors of the run itself end it `failed` at once)
MAX_FAILURES = 2
WAITING_PHASE = "waiting for a Ray slot"


# ------------------------------------------------------------------------------------------------ the trial
def _trial(config: dict[str, Any]) -> None:
    """A Tune function trainable: execute one run against the storage folder, reporting through Tune."""
    attempt = secrets.token_hex(6)  # this start of the trial; a restart after a crash gets a new one

    def send(ops: list, end: dict[str, Any] | None = None) -> None:
        tune.report({REPORT_KEY: {"attempt": attempt, "ops": ops, "end": end}})

    run = config["run"]
    spec = spec_from_yaml(run["spec_yaml"])
    reporter = OpsReporter(send)
    reporter.place(_trial_placement(spec))
    # No store here to fence file renames with: the tag keeps two attempts' temporary files apart.
    try:
        with fenced_files(FileFence(attempt, lambda rename: rename())):
            result = execute_run(spec, run["run_id"], Path(config["storage"]), reporter)
    except Exception as err:  # noqa: BLE001 - a run's own error ends it failed; only a dead process is retried
        reporter.flush()
        send([], _failure(err, run["run_id"]))
    else:
        reporter.flush()
        send([], {"status": "done", "result": result})


def _failure(err: Exception, run_id: str) -> dict[str, Any]:
    if isinstance(err, NonFiniteLoss):
        return {"status": "failed", "error": str(err), "data": {"step": err.step, "term": err.term,
                                                                "phase": err.phase}}
    return {"status": "failed", "error": failure_message(err, run_id), "data": {"traceback": traceback.format_exc()}}


def _trial_placement(spec: RunSpec) -> dict[str, Any]:
    try:
        devices = str(resolve_device(spec.device))
    except RuntimeError:
        devices = spec.device
    return {"executor": "ray", "node": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "devices": devices, "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid(),
            "trial_id": tune.get_context().get_trial_id()}


# ------------------------------------------------------------------------------------------------ the driver
class SweepLedger:
    """The driver's side of every trial: writes their reports to the store under each run's token, accepting
    only the current attempt of each, and records how each run ended. Free of Ray, so it is tested directly."""

    def __init__(self, store: Store, tokens: dict[str, str], heartbeat: Heartbeat,
                 launch_placement: dict[str, Any]) -> None:
        self.store = store
        self.tokens = dict(tokens)  # run id -> attempt token of the driver's claim
        self.heartbeat = heartbeat
        self.launch_placement = launch_placement
        self.current: dict[str, str] = {}  # run id -> attempt id whose reports are written
        self.retired: dict[str, set[str]] = {}
        self.ended: dict[str, str] = {}  # run id -> final status

    def report(self, run_id: str, payload: dict[str, Any]) -> None:
        """One report of a trial; dropped if its attempt was replaced or the run already ended."""
        attempt = payload["attempt"]
        if run_id in self.ended or attempt in self.retired.get(run_id, set()):
            log.warning("run %s: dropped a report of replaced attempt %s", run_id, attempt)
            return
        if self.current.get(run_id) not in (None, attempt):  # a newer start of the trial replaces the old one
            self.replace(run_id, "a new attempt of the trial started")
        self.current[run_id] = attempt
        ops = [self._placed(op) if op[0] == "placement" else op for op in payload["ops"]]
        if self._write(run_id, lambda: apply_ops(self.store, run_id, ops, self.tokens[run_id])) and payload["end"]:
            self._end(run_id, payload["end"])

    def replace(self, run_id: str, why: str) -> None:
        """The current attempt is over (its process died): retire it and renew the run's token."""
        old = self.current.pop(run_id, None)
        if old is not None:
            self.retired.setdefault(run_id, set()).add(old)
        if run_id in self.ended:
            return

        def renew() -> None:
            self.tokens[run_id] = self.store.renew_claim(run_id, self.tokens[run_id])
            self.heartbeat.hold(run_id, self.tokens[run_id])
            self.store.add_event(run_id, "warning", f"Ray trial: {why}; it resumes from its last checkpoint",
                                 token=self.tokens[run_id])
        self._write(run_id, renew)

    def fail(self, run_id: str, error: str) -> None:
        self._end(run_id, {"status": "failed", "error": error, "data": None})

    def stopped(self, run_id: str) -> None:
        """Tune ended the trial without a final report: cancelled if the user asked, else interrupted."""
        if run_id in self.ended:
            return
        if self.store.cancel_requested(run_id):
            self._end(run_id, {"status": "cancelled"})
        else:
            self.interrupt(run_id, "the Ray trial was stopped before the run ended")

    def interrupt(self, run_id: str, reason: str) -> None:
        if run_id in self.ended:
            return
        self.ended[run_id] = "interrupted"
        self.heartbeat.drop(run_id)
        self._write(run_id, lambda: self.store.release_run(
            run_id, self.tokens[run_id], "interrupted",
            f"{reason}; its last checkpoint is kept: python -m engine resume {run_id} continues it"))

    def wants_stop(self, run_id: str) -> bool:
        return run_id in self.ended or self.store.cancel_requested(run_id)

    def _end(self, run_id: str, end: dict[str, Any]) -> None:
        status, token = end["status"], self.tokens[run_id]
        self.ended[run_id] = status
        self.heartbeat.drop(run_id)
        if status == "done":
            result = end["result"]
            self._write(run_id, lambda: self.store.finish_run(run_id, "done", result=result, token=token),
                        lambda: self.store.add_event(run_id, "info", f"done: test accuracy {result['test_acc']:.4f}",
                                                     token=token))
        elif status == "cancelled":
            self._write(run_id, lambda: self.store.finish_run(
                run_id, "cancelled", error="cancelled by the user; the last epoch checkpoint is kept", token=token),
                lambda: self.store.add_event(run_id, "info", "cancelled", token=token))
        else:
            self._write(run_id, lambda: self.store.finish_run(run_id, "failed", error=end["error"], token=token),
                        lambda: self.store.add_event(run_id, "error", end["error"], end.get("data"), token=token))

    def _placed(self, op: list) -> list:
        return ["placement", {**self.launch_placement, **op[1]}]

    def _write(self, run_id: str, *writes: Any) -> bool:
        """The driver must outlive any one run's trouble: a lost claim (the user resumed the run elsewhere) stops
        that run's writes, a store error is logged; True when all were written."""
        if not record_writes(run_id, *writes):
            self.ended.setdefault(run_id, "lost")
            self.heartbeat.drop(run_id)
            return False
        return True


#: the ledgers of the sweeps this process drives, by sweep name: Tune pickles its callbacks and stopper (with the
#: experiment's state), so they carry only the name and find the ledger, with its store connection, here
_LEDGERS: dict[str, SweepLedger] = {}


def run_of(trial: tune.experiment.Trial) -> str:
    return trial.config["run"]["run_id"]


class _Writer(tune.Callback):
    """Puts the ledger of a sweep in Tune's loop (in the driver)."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if REPORT_KEY in result:
            _LEDGERS[self.sweep].report(run_of(trial), result[REPORT_KEY])

    def on_trial_recover(self, iteration, trials, trial, **info):
        _LEDGERS[self.sweep].replace(run_of(trial), f"its process died ({_short_error(trial)})")

    def on_trial_error(self, iteration, trials, trial, **info):
        _LEDGERS[self.sweep].fail(run_of(trial), f"the Ray trial failed {MAX_FAILURES + 1} times: "
                                                 f"{_short_error(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        _LEDGERS[self.sweep].stopped(run_of(trial))


class _CancelStopper(tune.Stopper):
    """Stops a trial whose run the user cancelled (or that already ended), at its next report."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return _LEDGERS[self.sweep].wants_stop(result["config"]["run"]["run_id"])

    def stop_all(self) -> bool:
        return False


def _short_error(trial: Any) -> str:
    text = (getattr(trial, "error_msg", None) or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error message"


def prepare(address: str | None, storage: Path, specs: list[RunSpec]) -> tuple[list[dict[str, float]], int]:
    """Join the cluster and check it can take these specs: (each one's trial resources, max concurrent trials)."""
    connect(address)
    nodes = alive_nodes()
    asked = check_resources(specs, nodes)
    check_storage(storage, nodes)
    return asked, max_concurrent(asked, nodes)


def drive(store: Store, run_ids: list[str], address: str | None = None, storage: Path | None = None
          ) -> dict[str, str]:
    """Run the given queued runs as Tune trials until every one ends; run id -> final status.

    Ctrl-C (Tune stops its trials) or any error leaves the runs not ended `interrupted`, resumable.
    """
    storage = (storage or store.home).resolve()
    runs = [store.get_run(run_id) for run_id in run_ids]
    # Checked again after launch_ray's check: a background driver starts here, and nodes may have left since.
    asked, concurrent = prepare(address, storage, [spec_from_yaml(r.spec_yaml) for r in runs])
    driver_id = f"ray-driver-{socket.gethostname()}-{os.getpid()}"
    store.register_worker(driver_id, f"ray {address or 'local'}")
    heartbeat = Heartbeat(store.home, driver_id)
    tokens = _claim(store, driver_id, run_ids, heartbeat)
    heartbeat.start()
    placement = {"executor": "ray", "address": address or "local", "storage": str(storage)}
    ledger = SweepLedger(store, tokens, heartbeat, placement)
    configs = [{"run_id": r.id, "spec_yaml": r.spec_yaml, "resources": resources}
               for r, resources in zip(runs, asked) if r.id in tokens]
    try:
        if configs:
            _fit(ledger, configs, storage, concurrent)
    finally:
        for run_id in tokens:
            ledger.interrupt(run_id, "the Ray driver stopped")
        heartbeat.stop()
        store.stop_worker(driver_id)
    return {run_id: store.get_run(run_id).status for run_id in run_ids}


def _claim(store: Store, driver_id: str, run_ids: list[str], heartbeat: Heartbeat) -> dict[str, str]:
    """Claim each run for the driver (one cancelled meanwhile is skipped); run id -> attempt token."""
    tokens = {}
    for run_id in run_ids:
        run = store.claim_run(driver_id, run_id)
        if run is None:
            continue
        tokens[run_id] = run.attempt_token
        heartbeat.hold(run_id, run.attempt_token)
        store.update_progress(run_id, 0.0, WAITING_PHASE, token=run.attempt_token)
    return tokens


def _fit(ledger: SweepLedger, configs: list[dict[str, Any]], storage: Path, concurrent: int) -> None:
    # Tune's own loggers would write every report (batches of metric rows) to JSON and CSV files: the store has them.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # ...and without them Tune warns at the end that it found no result files.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    sweep = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    writer, stopper = _Writer(sweep), _CancelStopper(sweep)
    trainable = tune.with_resources(_trial, _resources_of)
    tuner = tune.Tuner(
        trainable,
        param_space={"run": tune.grid_search(configs), "storage": str(storage)},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True,
                                    trial_dirname_creator=_trial_folder),
        run_config=tune.RunConfig(name=sweep, storage_path=str(storage / "ray"), callbacks=[writer], stop=stopper,
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))
    _LEDGERS[sweep] = ledger
    try:
        tuner.fit()
    finally:
        del _LEDGERS[sweep]


def _trial_folder(trial: Any) -> str:
    return trial.config["run"]["run_id"]


def _resources_of(config: dict[str, Any]) -> dict[str, float]:
    return config["run"]["resources"]


# ------------------------------------------------------------------------------------------------ launching
def launch_ray(store: Store, specs: list[RunSpec], group_id: str, address: str | None, storage: Path | None,
               wait: bool, announce: Callable[[str, list[str]], None] | None = None) -> Launch:
    """Create the group's runs, reserved for a Ray driver, and drive them here (wait) or in a background process."""
    storage = (storage or store.home).resolve()
    placement = {"executor": "ray", "address": address or "local", "storage": str(storage)}
    if wait:
        prepare(address, storage, specs)  # before any run exists: a bad cluster or storage creates nothing
    else:
        check_address(address)
        problem = write_problem(str(storage))
        if problem:
            raise ExecutorError(f"storage {storage}: not writable ({problem})")
    run_ids = [store.create_run(spec_to_yaml(spec), spec.name, group_id, placement=placement) for spec in specs]
    if announce:
        announce(group_id, run_ids)
    if wait:
        return Launch(group_id, run_ids, "ray", statuses=drive(store, run_ids, address, storage))
    return Launch(group_id, run_ids, "ray", driver_pid=_spawn_driver(store.home, group_id, address, storage))


def _spawn_driver(home: Path, group_id: str, address: str | None, storage: Path) -> int:
    """A driver process of its own session: it keeps running when the dashboard that launched it stops."""
    command = [sys.executable, "-m", "engine", "drive", group_id, "--storage", str(storage)]
    if address:
        command += ["--address", address]
    log_path = home / "logs" / f"driver-{group_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PATHSCOPE_HOME": str(home)},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def drive_group(store: Store, group_id: str, address: str | None, storage: Path | None) -> dict[str, str]:
    """Drive the queued runs of a group reserved for Ray (python -m engine drive, started by launch_ray)."""
    run_ids = [r.id for r in store.list_runs(statuses=("queued",), group_id=group_id) if r.executor == "ray"]
    if not run_ids:
        raise ExecutorError(f"group {group_id}: no queued run for the Ray executor")
    try:
        return drive(store, sorted(run_ids), address, storage)
    except ExecutorError as err:  # the background driver has no terminal: the runs say why they did not start
        for run_id in run_ids:
            store.finish_run(run_id, "failed", error=str(err))
        raise
