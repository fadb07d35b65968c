"""One run over two gloo DDP processes equals today's one-process run (execute_run) on the same global batch.

Each case trains an MLP student (no BatchNorm) on the embedded digits for 2 epochs, logging every step; the
two-process run goes through run_distributed (torchrun), writes to the store under the claim's token, and every
logged loss, weight, probe measurement and accuracy must equal the reference's to 1e-5.
"""
from __future__ import annotations

import math
from contextlib import closing
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from engine.distributed.checks import devices_present
from engine.distributed.launch import run_distributed
from engine.distributed.reducer import Reducer, slice_bounds
from engine.runner import execute_run
from engine.runtime import LostClaim, RunCancelled, RunInterrupted
from engine.spec import SpecError, parse_spec, spec_to_yaml
from engine.store import Store, init_workspace
from engine.train import MAIN_PHASE, NullReporter
from engine.workspace import run_dir
from tests.conftest import tiny_spec_dict

KD = {"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}
DKD = {"id": "t-dkd", "teacher": "t", "distiller": "dkd", "teacher_spot": "fc", "student_spot": "fc"}
#: an untrained second teacher: its KD gradient conflicts with the trained one's, so PCGrad projects
UNTRAINED = {"id": "u", "arch": "mlp", "arch_params": {"hidden": [32]},
             "source": {"kind": "train", "epochs": 1, "defect": "random_init"}}
UNTRAINED_KD = {**KD, "id": "u-kd", "teacher": "u"}
TRAINED = tiny_spec_dict()["teachers"][0]
#: digits' train split holds 1,294 samples: 3 batches of 431 (slices of 216 and 215) and a last batch of 1, which
#: leaves the second process a stand-in sample at share 0
TRAIN_SAMPLES = 1294
UNEVEN_BATCH = 431
CASES = {
    "equal+probe": {"paths": [KD, DKD], "weighting": {"name": "equal"},
                    "diagnostics": {"enabled": True, "every": 3, "window": 2, "t_threshold": 1.0}},
    # resumed from the reference's first-epoch checkpoint: every rank loads it (momentum is not broadcast by DDP)
    "pcgrad, resumed": {"teachers": [TRAINED, UNTRAINED], "paths": [KD, UNTRAINED_KD], "weighting": {"name": "pcgrad"},
               "telemetry_every": 1},
    # AMTML's learnt latents and uncertainty's log-variances both train inside the wrapped module. AMTML's angle
    # loss relates a batch's samples to each other (valued over each process's slice): left out here.
    "amtml+uncertainty": {"paths": [KD], "method": {"name": "amtml", "params": {"angle_weight": 0.0}},
                          "weighting": {"name": "uncertainty"},
                          "dataset": {"name": "digits", "batch_size": UNEVEN_BATCH}},
}
COMPARED = ("loss/", "weight/", "diag/", "acc/", "lr")


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace for the module: the inline teacher is trained once, then every run reuses it."""
    home = tmp_path_factory.mktemp("ddp") / "workspace"
    init_workspace(home)
    return home


def claimed_run(home: Path, spec) -> tuple[Store, str, str]:
    """A run in the store, claimed as a worker would: (store, run id, attempt token)."""
    store = Store(home)
    run_id = store.create_run(spec_to_yaml(spec), spec.name)
    return store, run_id, store.claim_run("test-worker", run_id).attempt_token


@pytest.mark.skipif(devices_present()[0] < 2 and not torch.cuda.is_available(), reason="needs 2 CPU cores")
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one_process_step_for_step(case: str, shared_home: Path) -> None:
    spec = parse_spec(tiny_spec_dict(name=case, log_every=1, **CASES[case]))
    reference = NullReporter()
    reference_id = "reference-" + "".join(c if c.isalnum() else "-" for c in case)
    expected = execute_run(spec, reference_id, shared_home, reference)
    store, run_id, token = claimed_run(shared_home, spec)
    resumed = "resumed" in case
    if resumed:
        checkpoints = run_dir(shared_home, run_id) / "checkpoints"
        checkpoints.mkdir(parents=True)
        shutil.copy(run_dir(shared_home, reference_id) / "checkpoints" / "epoch_000.pt", checkpoints / "last.pt")

    result = run_distributed(spec, run_id, shared_home, token, nproc=2)

    rows = store.metrics(run_id, phase=MAIN_PHASE)
    assert min(r["epoch"] for r in rows) == resumed  # a resumed run trained only its second epoch
    stored = [(r["step"], r["key"], r["value"]) for r in rows]
    assert len(stored) == len({(step, key) for step, key, _ in stored}), "a step's value was written twice"
    got = {(step, key): value for step, key, value in stored}
    want = {(r[1], r[3]): r[4] for r in reference.rows
            if r[0] == MAIN_PHASE and r[3].startswith(COMPARED) and r[2] >= resumed}
    assert set(want) <= set(got), sorted(set(want) - set(got))[:5]
    steps = (spec.epochs - resumed) * math.ceil(TRAIN_SAMPLES / spec.dataset.batch_size)
    assert sum(key == "loss/total" for _, key in want) == steps  # every step is compared
    differing = [(key, want[key], got[key]) for key in sorted(want) if abs(want[key] - got[key]) > 1e-5]
    assert not differing, differing[:5]
    assert result["test_acc"] == expected["test_acc"] and result.get("verdicts") == expected.get("verdicts")
    if "pcgrad" in case:  # the averaged gradient matrix met a conflict, so the projection itself was compared
        cosines = [array[4].values for array in reference.arrays if array[3] == "pcgrad/grad_cosine"]
        assert min(float(c.min()) for c in cosines) < 0
    assert result["nproc"] == 2 and result["samples_per_s"] > 0
    assert (run_dir(shared_home, run_id) / "checkpoints" / "final.pt").exists()
    launched = [e for e in store.events(run_id) if "distributed: 2 processes" in e["message"]]
    assert len(launched) == 1  # rank 0's events only


def test_cancel_seen_by_rank_zero_stops_every_rank(shared_home: Path) -> None:
    spec = parse_spec(tiny_spec_dict(name="cancelled", paths=[KD]))
    store, run_id, token = claimed_run(shared_home, spec)
    store.request_cancel(run_id)
    with pytest.raises(RunCancelled):
        run_distributed(spec, run_id, shared_home, token, nproc=2)
    assert store.metrics(run_id, phase=MAIN_PHASE) == []


def test_a_stale_token_writes_nothing_and_ends_as_lost_claim(shared_home: Path) -> None:
    spec = parse_spec(tiny_spec_dict(name="reclaimed", paths=[KD]))
    store, run_id, _ = claimed_run(shared_home, spec)
    with pytest.raises(LostClaim):
        run_distributed(spec, run_id, shared_home, "an-older-attempt", nproc=2)
    assert store.metrics(run_id) == [] and store.events(run_id) == []


def test_nproc_above_the_devices_present_is_refused(tmp_path: Path) -> None:
    count, _ = devices_present()
    spec = parse_spec(tiny_spec_dict(distributed={"nproc": count + 1}))
    with pytest.raises(SpecError) as refused:
        run_distributed(spec, "never-started", tmp_path, None)
    message = str(refused.value)
    assert message.startswith("distributed.nproc:") and f"has {count} " in message
    assert f"at most {count}" in message
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_weighting_ddp_would_let_drift_is_refused_by_name(tmp_path: Path) -> None:
    spec = parse_spec(tiny_spec_dict(weighting={"name": "gradnorm"}, distributed={"nproc": 2}))
    with pytest.raises(SpecError, match=r"weighting\.name: gradnorm cannot run with distributed\.nproc > 1"):
        run_distributed(spec, "never-started", tmp_path, None)


@pytest.mark.parametrize("size", [1, 2, 63, 64, 431])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_batch_slices_cover_the_global_batch_once(size: int, world: int) -> None:
    bounds = [slice_bounds(size, rank, world) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_one_process_reducer_changes_nothing() -> None:
    reducer = Reducer()
    tensor = torch.arange(6.0).reshape(2, 3)
    assert reducer.mean(tensor) is tensor and reducer.writes and reducer.world_size == 1
    assert reducer.accuracy(torch.tensor(3), 4) == 0.75


def test_a_stopping_caller_ends_the_ranks_and_raises_interrupted(shared_home: Path) -> None:
    spec = parse_spec(tiny_spec_dict(name="stopped", paths=[KD]))
    store, run_id, token = claimed_run(shared_home, spec)
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()  # the worker's stop event, set while the ranks are starting
    started = time.monotonic()
    with pytest.raises(RunInterrupted):
        run_distributed(spec, run_id, shared_home, token, nproc=2, stop=stop)
    assert time.monotonic() - started < 15
    assert not (run_dir(shared_home, run_id) / "distributed" / "result.json").exists()


@pytest.mark.skipif(devices_present()[0] < 2 and not torch.cuda.is_available(), reason="needs 2 CPU cores")
def test_the_cli_trains_a_spec_as_two_processes_and_the_store_says_where(tmp_path: Path) -> None:
    """`python -m engine run SPEC --nproc 2`: the worker path (execute_claimed) hands the claim to the ranks."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec_dict(epochs=1)))
    home = tmp_path / "workspace"
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(spec_file), "--nproc", "2"],
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PATHSCOPE_HOME": str(home)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and result["nproc"] == 2
    with closing(Store(home, readonly=True)) as store:
        run = store.get_run(result["run_id"])
        assert run.status == "done" and run.placement["executor"] == "local"
        assert yaml.safe_load(run.spec_yaml)["distributed"]["nproc"] == 2
