"""Teacher checks: each teacher's test accuracy, measured once (cached by weights and data), logged as an event
of the run, and checkable before launch by a job a worker runs."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from engine.cli import main as cli_main
from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store
from engine.teacher_check import (ACC_FOLDER, CHECK_RUN_ID, JOB_KIND, TRAINED_INSIDE, submit_teacher_check,
                                  teacher_check_status)
from engine.worker import execute_claimed, serve
from tests.conftest import ROOT, tiny_spec_dict
from tests.plain_cifar import akamaster_accuracy

DATA = ROOT.parent / "shared" / "data"
CIFAR = DATA / "cifar10-jpg"
R56 = DATA / "checkpoints" / "akamaster-cifar10" / "resnet56-4bfd9763.th"
needs_data = pytest.mark.skipif(not (CIFAR / "test").is_dir() or not R56.is_file(), reason="../shared/data is absent")


def _run(store: Store, spec_dict: dict) -> tuple[str, dict]:
    spec = parse_spec(spec_dict)
    run_id = store.create_run(spec_to_yaml(spec), spec.name)
    result = execute_claimed(store, store.claim_run("test", run_id), threading.Event())
    assert result is not None, store.get_run(run_id).error
    return run_id, result


def _accuracy_events(store: Store, run_id: str) -> dict[str, dict]:
    found = {}
    for event in store.events(run_id):
        data = json.loads(event["data_json"]) if event["data_json"] else {}
        if "test_acc" in data and "teacher" in data:
            assert set(data) == {"teacher", "test_acc", "test_samples", "cached"}
            assert event["message"].startswith(f"teacher {data['teacher']}: test accuracy ")
            found[data["teacher"]] = data
    return found


def test_each_teacher_accuracy_is_an_event_and_a_second_run_reuses_it(home: Path) -> None:
    store = Store(home)
    first_id, first = _run(store, tiny_spec_dict())
    events = _accuracy_events(store, first_id)
    assert events["t"]["test_acc"] == first["teacher_test_acc"]["t"]  # inline teacher: known after training
    assert events["t"]["test_samples"] == 359 and events["t"]["cached"] is False
    # The first run's student as a teacher from a run: measured once, then read from the cache.
    spec = tiny_spec_dict(teachers=[{"id": "t", "arch": "mlp", "arch_params": {"hidden": [32]},
                                      "source": {"kind": "train", "epochs": 2}},
                                     {"id": "prev", "arch": "mlp", "arch_params": {"hidden": [16]},
                                      "source": {"kind": "run", "run_id": first_id}}], epochs=1)
    second_id, second = _run(store, spec)
    events = _accuracy_events(store, second_id)
    assert events["t"]["cached"] is True and events["t"]["test_acc"] == first["teacher_test_acc"]["t"]
    assert events["prev"] == {"teacher": "prev", "test_acc": pytest.approx(first["test_acc"], abs=1e-9),
                              "test_samples": 359, "cached": False}
    assert second["teacher_test_acc"]["prev"] == pytest.approx(first["test_acc"], abs=1e-9)
    third_id, third = _run(store, spec)
    assert _accuracy_events(store, third_id)["prev"]["cached"] is True
    assert third["teacher_test_acc"] == second["teacher_test_acc"]
    assert len(list((home / "cache" / ACC_FOLDER).glob("*.json"))) == 2


def test_check_job_before_launch_reports_inline_teachers_as_trained_inside(home: Path) -> None:
    store = Store(home)
    spec_yaml = spec_to_yaml(parse_spec(tiny_spec_dict()))
    job_id = submit_teacher_check(store, spec_yaml)
    assert store.get_job(job_id).run_id == CHECK_RUN_ID and store.get_job(job_id).kind == JOB_KIND
    assert teacher_check_status(store, job_id)["status"] == "queued"
    serve(home, once=True)
    status = teacher_check_status(store, job_id)
    assert status["status"] == "done", status["error"]
    assert status["teachers"] == {"t": {"test_acc": None, "test_samples": 359, "cached": False,
                                        "note": TRAINED_INSIDE}}
    # Once a run has trained it, the check reuses that teacher (no training) and its accuracy.
    _, result = _run(store, tiny_spec_dict())
    job_id = submit_teacher_check(store, spec_yaml)
    serve(home, once=True)
    entry = teacher_check_status(store, job_id)["teachers"]["t"]
    assert entry == {"test_acc": result["teacher_test_acc"]["t"], "test_samples": 359, "cached": True}
    assert teacher_check_status(store, "job-nope") is None


def test_check_job_fails_naming_a_missing_checkpoint(home: Path) -> None:
    store = Store(home)
    spec = tiny_spec_dict(teachers=[{"id": "t", "arch": "mlp", "source": {"kind": "checkpoint",
                                                                          "path": str(home / "missing.pt")}}])
    job_id = submit_teacher_check(store, yaml.safe_dump(spec))
    serve(home, once=True)
    status = teacher_check_status(store, job_id)
    assert status["status"] == "failed" and "missing.pt" in status["error"]


@needs_data
def test_resnet56_accuracy_equals_a_plain_pytorch_evaluation(home: Path, capsys) -> None:
    """The check job (through a worker), the CLI and a run report what plain PyTorch measures: about 82-83%."""
    spec = {"name": "r56 check", "dataset": {"name": "image_folder", "root": str(CIFAR), "normalize": "imagenet"},
            "teachers": [{"id": "r56", "arch": "resnet56", "source": {"kind": "checkpoint", "path": str(R56)}}],
            "student": {"arch": "resnet8"}}
    store = Store(home)
    job_id = submit_teacher_check(store, yaml.safe_dump(spec))
    serve(home, once=True)
    status = teacher_check_status(store, job_id)
    assert status["status"] == "done", status["error"]
    measured = status["teachers"]["r56"]
    plain, samples = akamaster_accuracy(R56, 56, CIFAR / "test")
    assert measured["test_samples"] == samples == 1000 and measured["cached"] is False
    assert abs(measured["test_acc"] - plain) <= 0.001, (measured, plain)
    assert 0.78 < plain < 0.87
    # The CLI runs the same job in-process; the accuracy now comes from the cache.
    spec_file = home / "r56.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    assert cli_main(["check-teachers", str(spec_file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["teacher", "test", "acc", "samples", "note"]
    assert lines[1].split()[:2] == ["r56", f"{100 * measured['test_acc']:.2f}%"] and lines[1].endswith("cached")
    assert json.loads(lines[-1])["teachers"]["r56"] == {**measured, "cached": True}
