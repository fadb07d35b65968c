"""Uploads keep their history (issue 12): an upload never replaces a file a finished run may name as its teacher.

Configure's checkpoint uploader saves into workspace/uploads/: new bytes under a taken name go beside the old file
(its name tagged with their hash), the same bytes reuse the file, and the page says where the upload went.
"""
from __future__ import annotations

import hashlib
import io
from contextlib import closing
from pathlib import Path

import torch

from app.writes import save_upload
from engine.models import build_model
from engine.models.weights import load_source
from engine.spec import parse_spec, spec_from_yaml, spec_to_yaml
from engine.store import Store
from synthetic_runs import add_finished_run
from page_helpers import open_page, texts

NAME = "teacher.pt"
HIDDEN = [16]


def checkpoint(seed: int) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A digits MLP's state dict as saved by torch (its bytes, and the tensors)."""
    torch.manual_seed(seed)
    state = build_model("mlp", 10, 1, 8, {"hidden": HIDDEN}).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def upload(at, data: bytes):
    at.file_uploader(key="cfg_ckpt").set_value((NAME, data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def finished_run_with_teacher(home: Path, path: Path) -> str:
    """A finished run whose teacher is the checkpoint at ``path``."""
    spec = parse_spec({
        "name": "from-upload", "dataset": {"name": "digits"},
        "teachers": [{"id": "t", "arch": "mlp", "arch_params": {"hidden": HIDDEN},
                      "source": {"kind": "checkpoint", "path": str(path)}}],
        "student": {"arch": "mlp"},
        "paths": [{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
        "epochs": 1,
    })
    return add_finished_run(home, name="from-upload", stored_spec=spec_to_yaml(spec))


def teacher_of(home: Path, run_id: str) -> dict[str, torch.Tensor]:
    """The weights the run's stored spec loads into its teacher, as the engine loads them."""
    with closing(Store(home)) as store:
        spec = spec_from_yaml(store.get_run(run_id).spec_yaml)
    teacher = spec.teachers[0]
    model = build_model(teacher.arch, 10, 1, 8, teacher.arch_params)
    load_source(model, teacher.arch, teacher.source, "teacher", run_file=lambda _: Path("no run: a checkpoint"))
    return model.state_dict()


def test_a_second_upload_under_the_same_name_keeps_the_first(workspace: Path) -> None:
    first, first_state = checkpoint(seed=0)
    second, _ = checkpoint(seed=1)
    at = upload(open_page("configure"), first)
    kept = workspace / "uploads" / NAME
    assert f"Saved as {kept}" in texts(at.success)
    run_id = finished_run_with_teacher(workspace, kept)

    upload(at, second)
    beside = workspace / "uploads" / f"teacher-{hashlib.sha256(second).hexdigest()[:12]}.pt"
    assert kept.read_bytes() == first and beside.read_bytes() == second
    message = texts(at.success)
    assert f"Saved as {beside}" in message and f"{NAME} there holds different bytes" in message
    assert all(torch.equal(first_state[k], v) for k, v in teacher_of(workspace, run_id).items())

    upload(at, first)  # the same bytes again: nothing new is written
    assert f"Already in the workspace as {kept}" in texts(at.success)
    assert sorted(p.name for p in (workspace / "uploads").iterdir()) == sorted([NAME, beside.name])


def test_an_upload_stays_in_its_folder_whatever_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    names = ["../../escape.pt", "..", ".hidden.pt", "a b/c?.pt"]
    saved = [save_upload(folder, name, name.encode()).path for name in names]
    assert [p.name for p in saved] == ["escape.pt", "upload", "hidden.pt", "c_.pt"]
    assert all(p.parent == folder and p.read_bytes() == name.encode() for p, name in zip(saved, names))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(p.name for p in saved)


def test_names_taken_by_other_bytes_are_skipped_until_one_is_free(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    data = b"new weights"
    tagged = f"w-{hashlib.sha256(data).hexdigest()[:12]}"
    folder.mkdir()
    for taken in ("w.pt", f"{tagged}.pt"):  # e.g. copied there by hand
        (folder / taken).write_bytes(b"something else")
    saved = save_upload(folder, "w.pt", data)
    assert saved.path == folder / f"{tagged}-2.pt" and saved.renamed_from == "w.pt"
    assert (folder / "w.pt").read_bytes() == b"something else"
