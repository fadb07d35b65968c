"""The student to take home: runs/<id>/student.pt (weights + model card) and its TorchScript / ONNX exports,
on a real run (CIFAR-10 JPEGs, the published resnet20 distilled into a resnet8)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from engine.cli import main as cli_main
from engine.data import load_dataset
from engine.export import (STUDENT_FORMAT, ExportError, export_student, read_student, student_model, student_path)
from engine.jobs import execute_job
from engine.models import build_model
from engine.spec import parse_spec, spec_from_yaml, spec_to_yaml
from engine.store import Store, init_workspace, run_dir
from engine.worker import execute_claimed
from tests.conftest import ROOT

DATA = ROOT.parent / "shared" / "data"
CIFAR = DATA / "cifar10-jpg"
R20 = DATA / "checkpoints" / "akamaster-cifar10" / "resnet20-12fca82f.th"
pytestmark = pytest.mark.skipif(not (CIFAR / "test").is_dir() or not R20.is_file(), reason="../shared/data is absent")

#: a few seconds on two CPU cores: 1,000 training images, normalised by their own statistics (so the card must
#: carry the values actually used), the whole 1,000-image test folder
SPEC = {
    "name": "export",
    "dataset": {"name": "image_folder", "root": str(CIFAR), "train_size": 1000, "normalize": "dataset",
                "batch_size": 32},
    "teachers": [{"id": "r20", "arch": "resnet20", "source": {"kind": "checkpoint", "path": str(R20)}}],
    "student": {"arch": "resnet8"},
    "paths": [{"id": "r20-kd", "teacher": "r20", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
    "optimizer": {"name": "sgd", "lr": 0.05},
    "epochs": 2,
    "seed": 0,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """(home, run id, result) of a finished run, trained in-process in its own workspace."""
    home = init_workspace(tmp_path_factory.mktemp("export") / "workspace")
    store = Store(home)
    spec = parse_spec(SPEC)
    run_id = store.create_run(spec_to_yaml(spec), spec.name)
    result = execute_claimed(store, store.claim_run("test", run_id), threading.Event())
    assert result is not None, store.get_run(run_id).error
    store.close()
    return home, run_id, result


def _final_model(home: Path, run_id: str) -> torch.nn.Module:
    saved = torch.load(run_dir(home, run_id) / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
    model = build_model("resnet8", 10, 3, 32)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _test_images(home: Path, n: int = 64) -> torch.Tensor:
    bundle = load_dataset(parse_spec(SPEC).dataset, home / "cache")
    return bundle.test.x[:n].contiguous()


def test_every_run_writes_a_student_file_with_its_card(run) -> None:
    home, run_id, result = run
    path = student_path(home, run_id)
    assert result["student_file"] == str(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert payload["format"] == STUDENT_FORMAT and payload["version"] == 1
    card = payload["card"]
    assert card["arch"] == "resnet8" and card["arch_params"] == {} and card["num_classes"] == 10
    assert card["class_names"] == sorted(p.name for p in (CIFAR / "test").iterdir())
    assert card["input_size"] == [3, 32, 32]
    bundle = load_dataset(parse_spec(SPEC).dataset, home / "cache")
    assert card["preprocess"]["mean"] == pytest.approx(list(bundle.mean), abs=0)
    assert card["preprocess"]["std"] == pytest.approx(list(bundle.std), abs=0)
    assert card["preprocess"]["mean"] != pytest.approx([0.485, 0.456, 0.406], abs=1e-3)  # the train split's own
    assert card["preprocess"]["pixel_max"] == 255.0 and card["preprocess"]["resize"]["size"] == [32, 32]
    assert "CenterCrop" in card["preprocess"]["resize"]["method"] and card["normalize"] == "dataset"
    assert spec_from_yaml(card["spec_yaml"]) == parse_spec(SPEC)
    metrics = card["metrics"]
    assert metrics["test_acc"] == result["test_acc"] and metrics["val_acc"] == result["val_acc"]
    assert metrics["teacher_test_acc"] == result["teacher_test_acc"] and metrics["test_samples"] == 1000
    assert metrics["epochs"] == 2 and card["run_id"] == run_id
    final = torch.load(run_dir(home, run_id) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    assert payload["state_dict"].keys() == final.keys()
    assert all(torch.equal(payload["state_dict"][k], final[k]) for k in final)


def test_a_plain_pytorch_script_reproduces_the_test_accuracy(run, tmp_path: Path) -> None:
    """No PathScope import: the script defines the architecture itself and follows the card."""
    home, run_id, result = run
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "plain_cifar.py"), str(student_path(home, run_id)),
                           str(CIFAR / "test")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plain["engine_imported"] is False and plain["samples"] == 1000
    assert abs(plain["acc"] - result["test_acc"]) <= 0.001, (plain, result["test_acc"])
    assert result["test_acc"] > 0.15  # learned something in two epochs (chance: 0.10)


def test_torchscript_and_onnx_give_the_final_checkpoints_logits(run, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    home, run_id, _ = run
    x = _test_images(home)
    with torch.no_grad():
        expected = _final_model(home, run_id)(x)
    ts = export_student(home, run_id, tmp_path / "s.torchscript.pt", "torchscript")
    assert ts["verified"] and ts["max_abs_diff"] <= 1e-4
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "s.torchscript.pt"))(x)
    assert (got - expected).abs().max() <= 1e-4
    ox = export_student(home, run_id, tmp_path / "s.onnx", "onnx")
    assert ox["verified"] and ox["batch"] == "dynamic"
    onnx.checker.check_model(str(tmp_path / "s.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):  # any batch size
        got = torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])
        assert (got - expected[: len(batch)]).abs().max() <= 1e-4
    pt = export_student(home, run_id, tmp_path / "copy.pt", "pt")
    assert (tmp_path / "copy.pt").read_bytes() == student_path(home, run_id).read_bytes() and pt["format"] == "pt"


def test_a_run_that_predates_student_files_gets_one_from_final_pt(run, tmp_path: Path) -> None:
    home, run_id, result = run
    original = read_student(student_path(home, run_id))
    moved = tmp_path / "kept.pt"
    student_path(home, run_id).rename(moved)
    try:
        export_student(home, run_id, tmp_path / "rebuilt.pt", "pt")
        rebuilt = read_student(tmp_path / "rebuilt.pt")
        assert {k: v for k, v in rebuilt["card"].items() if k != "created_at"} == \
            {k: v for k, v in original["card"].items() if k != "created_at"}
        assert all(torch.equal(rebuilt["state_dict"][k], v) for k, v in original["state_dict"].items())
        x = _test_images(home, 8)
        with torch.no_grad():
            assert torch.equal(student_model(rebuilt)(x), _final_model(home, run_id)(x))
    finally:
        os.replace(moved, student_path(home, run_id))


def test_the_export_job_writes_under_the_run(run) -> None:
    home, run_id, _ = run
    store = Store(home)
    job_id = store.create_job(run_id, "export", {"format": "onnx"})
    result = execute_job(store, store.claim_job("test", job_id))
    assert result is not None, store.get_job(job_id).error
    assert Path(result["file"]) == run_dir(home, run_id) / "exports" / "student.onnx" and result["verified"]
    job_id = store.create_job(run_id, "export", {"format": "tflite"})
    assert execute_job(store, store.claim_job("test", job_id)) is None
    assert "unknown format 'tflite'" in store.get_job(job_id).error


def test_export_errors_are_clear(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    home, run_id, _ = run
    with pytest.raises(ExportError, match="no run 'nope'"):
        export_student(home, "nope", tmp_path / "s.pt", "pt")
    with pytest.raises(ExportError, match="unknown format 'keras'"):
        export_student(home, run_id, tmp_path / "s.pt", "keras")
    with pytest.raises(ExportError, match="does not exist"):
        export_student(home, run_id, tmp_path / "missing" / "s.pt", "pt")
    with pytest.raises(ExportError, match="is a folder"):
        export_student(home, run_id, tmp_path, "pt")
    store = Store(home)
    queued = store.create_run(spec_to_yaml(parse_spec(SPEC)), "queued")
    with pytest.raises(ExportError, match=f"run {queued} is queued, not done"):
        export_student(home, queued, tmp_path / "s.pt", "pt")
    # The command line: the same messages, exit 2; --csv still works.
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    assert cli_main(["export", queued, "--student", str(tmp_path / "s.pt")]) == 2
    assert f"error: run {queued} is queued, not done" in capsys.readouterr().err
    assert cli_main(["export", run_id, "--student", str(tmp_path / "s.onnx"), "--format", "onnx"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"wrote the student of {run_id} as onnx") and json.loads(out[-1])["verified"]
    assert cli_main(["export", run_id, "--csv", str(tmp_path / "m.csv")]) == 0
    assert (tmp_path / "m.csv").read_text().startswith("run_id,phase,step,epoch,key,value")
    with pytest.raises(SystemExit):
        cli_main(["export", run_id, "--student", str(tmp_path / "s.x"), "--format", "keras"])
