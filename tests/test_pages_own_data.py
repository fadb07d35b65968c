"""The pages a user meets with their own images and checkpoints (AppTest, no worker, no training).

Configure: the image-folder layout note, normalisation, checkpoints uploaded or copied by hand, one click
from a checkpoint to a teacher, the student's starting point, *Check teachers*. Live and Compare: each
teacher's test accuracy and *Download student*. Attribution's class names.
"""
from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest
import torch

from app import attribution_charts as ac
from app.spec_form import teacher_check_frame
from engine.export import student_path
from engine.store import Store, init_workspace
from engine.teacher_check import JOB_KIND
from synthetic_runs import add_finished_run
from page_helpers import button, open_page, texts

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT / ".." / "shared" / "data" / "cifar10-jpg"
RESNET56 = ROOT / ".." / "shared" / "data" / "checkpoints" / "akamaster-cifar10" / "resnet56-4bfd9763.th"
CFG = "cfg_spec"


def spec_of(at) -> dict:
    return at.session_state[CFG]


def set_dataset(at, **fields) -> None:
    """Change the form's dataset fields as the widgets would, then rerun the page."""
    spec = spec_of(at)
    spec["dataset"].update(fields)
    at.session_state[CFG] = spec
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_configure_explains_an_image_folder_layout(workspace: Path) -> None:
    at = open_page("configure")
    at.selectbox(key="cfg0.dataset.name").set_value("image_folder").run()
    assert "Give the folder of your images" in texts(at.info)
    at.text_input(key="cfg0.dataset.root").set_value(str(CIFAR)).run()
    note = texts(at.caption)
    assert "train/ (3,000 images) and test/ (1,000 images)" in note and "airplane, automobile" in note
    assert "Input 3×32×32 · 10 classes" in note
    at.text_input(key="cfg0.dataset.root").set_value(str(CIFAR / "nowhere")).run()
    assert "does not exist" in texts(at.warning)
    assert not at.exception


def test_configure_names_a_bad_custom_normalisation(workspace: Path) -> None:
    at = open_page("configure")
    at.selectbox(key="cfg0.dataset.normalize").set_value("custom").run()
    at.text_input(key="cfg0.dataset.normalize.values").set_value("0.5, 0.5 / 0.2").run()
    errors = texts(at.error)
    assert "dataset.normalize" in errors and "mean has 2 values but std has 1" in errors
    at.text_input(key="cfg0.dataset.normalize.values").set_value("0.5 / 0.25").run()
    assert spec_of(at)["dataset"]["normalize"] == {"mean": [0.5], "std": [0.25]}
    assert "The spec is valid." in texts(at.success)  # digits has one channel


def test_configure_turns_an_uploaded_checkpoint_into_the_teacher(workspace: Path) -> None:
    at = open_page("configure")
    at.file_uploader(key="cfg_ckpt").set_value((RESNET56.name, RESNET56.read_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "fits resnet56 (10 classes)" in texts(at.caption)
    button(at, "Replace the teachers with it").click().run()
    saved = str(workspace / "uploads" / RESNET56.name)
    assert spec_of(at)["teachers"] == [{"id": "resnet56", "arch": "resnet56", "arch_params": {},
                                        "source": {"kind": "checkpoint", "path": saved}}]
    assert spec_of(at)["paths"] == []  # the demo's paths led to the teacher that is gone


def test_configure_names_an_uploaded_file_that_is_no_checkpoint(workspace: Path) -> None:
    at = open_page("configure")
    at.file_uploader(key="cfg_ckpt").set_value(("notes.pt", b"not a checkpoint", "application/octet-stream")).run()
    assert not at.exception
    assert "notes.pt" in texts(at.error)


def test_configure_offers_checkpoints_copied_into_uploads_by_hand(workspace: Path) -> None:
    init_workspace(workspace)
    (workspace / "uploads").mkdir(exist_ok=True)
    copied = workspace / "uploads" / RESNET56.name
    shutil.copy(RESNET56, copied)
    (workspace / "uploads" / "README.txt").write_text("not a checkpoint")
    at = open_page("configure")
    at.selectbox(key="cfg0.student.source.kind").set_value("checkpoint").run()
    options = at.selectbox(key="cfg0.student.source.path.checkpoint").options
    assert options == [copied.name]  # shown by name; the .txt file is not offered
    at.selectbox(key="cfg0.student.source.path.checkpoint").set_value(str(copied)).run()
    assert spec_of(at)["student"]["source"] == {"kind": "checkpoint", "path": str(copied)}
    # The demo's MLP student cannot take a resnet56 checkpoint: the student section says which architecture can.
    errors = texts(at.error)
    assert "student.source.path" in errors and "it fits: resnet56 (10 classes)" in errors


def test_configure_check_teachers_queues_a_job_and_shows_its_result(workspace: Path) -> None:
    at = open_page("configure")
    button(at, "Check teachers").click().run()
    with closing(Store(workspace)) as store:
        (job,) = store.list_jobs("", JOB_KIND)
        assert "spec_yaml" in job.params
        store.claim_job("test-worker", job.id)
        store.finish_job(job.id, "done", result={"cnn": {"test_acc": 0.9712, "test_samples": 360, "cached": False}})
    at.run()
    assert not at.exception
    (metric,) = [m for m in at.metric if m.label == "teacher cnn · test acc"]
    assert metric.value == "97.12 %"


def test_teacher_check_frame_says_why_an_accuracy_is_missing() -> None:
    frame = teacher_check_frame({
        "a": {"test_acc": 0.5, "test_samples": 10, "cached": True},
        "b": {"test_acc": None, "test_samples": 10, "cached": False, "note": "trained inside the run"},
        "c": {"test_acc": None, "test_samples": 10, "cached": False, "error": "checkpoint x.pt does not fit"},
    })
    assert frame["accuracy"].tolist()[0] == 50.0 and frame["accuracy"].isna().tolist() == [False, True, True]
    assert frame["note"].tolist() == ["reused from the cache", "trained inside the run", "checkpoint x.pt does not fit"]


@pytest.fixture
def run_with_student(workspace: Path) -> str:
    run_id = add_finished_run(workspace, name="cifar student")
    with closing(Store(workspace)) as store:
        store.add_event(run_id, "info", "teacher r56: test accuracy 83.10% on 1,000 test images",
                        {"teacher": "r56", "test_acc": 0.831, "test_samples": 1000, "cached": False})
    torch.save({"format": "pathscope-student", "state_dict": {}, "card": {}}, student_path(workspace, run_id))
    return run_id


def test_live_shows_each_teachers_accuracy_and_offers_the_student(run_with_student: str) -> None:
    at = open_page("live")
    (metric,) = [m for m in at.metric if m.label == "teacher r56 · test acc"]
    assert metric.value == "83.10 %"
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Download student", "Report (HTML)", "Summary (Markdown)"]


def test_live_says_how_to_export_a_run_without_a_student_file(workspace: Path) -> None:
    run_id = add_finished_run(workspace)
    at = open_page("live")
    assert "Download student" not in [d.proto.label for d in at.get("download_button")]  # the reports remain
    assert f"python -m engine export {run_id} --student student.pt" in texts(at.caption)


def test_compare_offers_the_student_of_a_finished_run(run_with_student: str) -> None:
    at = open_page("compare")
    labels = [d.proto.label for d in at.get("download_button")]
    assert "Download student" in labels


def test_class_labels_carry_the_datasets_names() -> None:
    names = ["airplane", "automobile", "bird"]
    assert ac.class_label(2, names) == "2 · bird"
    assert ac.class_label(5, names) == "5"  # a label outside the names stays a number
    assert ac.class_label(3, [str(n) for n in range(10)]) == "3"  # digits: the name is the number
    assert ac.caption(1, 0.5, names) == "pred 1 · automobile (50.0%)"
