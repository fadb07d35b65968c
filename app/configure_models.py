"""The Configure page's Teachers and Student sections: architectures, where their weights come from (trained here,
a finished run, an imported checkpoint, published weights), and the checkpoint upload."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import streamlit as st

from app import cached
from app.configure_state import choice, commit_tables, key, mapping_input, table_edited, table_key
from app.spec_form import (
    SOURCE_KINDS, STUDENT_SOURCE_KINDS, renamed_teachers, retarget_paths, student_source, teachers_frame,
    teachers_from_frame,
)
from app.writes import save_checkpoint, uploads_dir
from engine.models import MODELS, model_params
from engine.models.checkpoint import CHECKPOINT_EXTENSIONS, CheckpointError, CheckpointInfo, describe_checkpoint
from engine.models.families import FAMILIES, family_models

SAVED_CHECKPOINTS = "cfg_saved_checkpoints"


def finished_runs(home: str) -> dict[str, str]:
    runs = cached.runs(home)  # archived ones too: an archived run's student is still a teacher to pick
    done = runs[runs["status"] == "done"]
    return dict(zip(done["id"], done["label"]))


def checkpoint_files(home: str, current: list[str]) -> list[str]:
    """Checkpoint files of the uploads folder (uploaded here or copied there by hand) and those in the spec."""
    found = [str(f) for f in sorted(uploads_dir(home).glob("*")) if f.suffix.lower() in CHECKPOINT_EXTENSIONS]
    return list(dict.fromkeys([*found, *current]))


def checkpoint_upload(d: dict[str, Any], home: str) -> None:
    extensions = " ".join(CHECKPOINT_EXTENSIONS)
    file = st.file_uploader(f"Import a checkpoint ({extensions})", type=[e.lstrip(".") for e in CHECKPOINT_EXTENSIONS],
                            key="cfg_ckpt",
                            help="Saved in the workspace's uploads folder, where files copied by hand are offered "
                                 "too; read as data only (weights_only, or safetensors) by the worker")
    saved = st.session_state.setdefault(SAVED_CHECKPOINTS, {})
    if file is not None and file.file_id not in saved:
        saved[file.file_id] = save_checkpoint(home, file)
    if file is None:
        return
    path = str(saved[file.file_id].path)
    st.success(f"{saved[file.file_id].describe()}: pick it in a teacher's checkpoint column (source: checkpoint) "
               "or as the student's starting point.")
    try:
        info = checkpoint_info(path, Path(path).stat().st_mtime)
    except (CheckpointError, OSError) as err:
        st.error(str(err))
        return
    st.caption(info.describe())
    if info.fits:
        use_as_teacher(d, path, info.fits[0].split(" (")[0])


@st.cache_data(max_entries=32, show_spinner="Reading the checkpoint…")
def checkpoint_info(path: str, mtime: float) -> CheckpointInfo:
    return describe_checkpoint(path)


def use_as_teacher(d: dict[str, Any], path: str, arch: str) -> None:
    """One click from an uploaded file to a teacher: added beside the others, or replacing them (and their paths)."""
    teacher = {"id": unique_teacher_id(arch, d["teachers"]), "arch": arch, "arch_params": {},
               "source": {"kind": "checkpoint", "path": path}}
    c1, c2 = st.columns(2)
    if c1.button(f"Add it as a {arch} teacher", icon=":material/person_add:", key=key("ckpt.add")):
        d["teachers"] = [*d["teachers"], teacher]
        commit_tables("teachers", "paths")
    if c2.button("Replace the teachers with it", icon=":material/swap_horiz:", key=key("ckpt.replace"),
                 help="Removes the other teachers and their paths; add paths to the new teacher below"):
        d["teachers"] = [teacher]
        d["paths"] = []
        commit_tables("teachers", "paths")


def unique_teacher_id(arch: str, teachers: list[dict[str, Any]]) -> str:
    """The architecture's name as a teacher id, numbered when another teacher has it already."""
    base = re.sub(r"[^A-Za-z0-9_\-]", "_", arch)[:32]
    taken = {t.get("id") for t in teachers}
    return next(c for c in [base, *(f"{base}-{n}" for n in range(2, len(taken) + 3))] if c not in taken)


@st.cache_resource(show_spinner=False)
def family_model_names() -> list[str]:
    """Every torchvision and timm model (about 1,400 names, listed once per server)."""
    return [name for family in FAMILIES for name in family_models(family)]


def arch_options(*current: str | None) -> list[str]:
    """PathScope's own architectures, the torchvision and timm families, and any name the spec already holds."""
    return list(dict.fromkeys([*MODELS.names(), *family_model_names(), *(c for c in current if c)]))


def teacher_columns(d: dict[str, Any], home: str) -> dict[str, Any]:
    runs = finished_runs(home)
    current = [t["source"].get("path") for t in d["teachers"] if t["source"].get("path")]
    files = checkpoint_files(home, current)
    col = st.column_config
    return {
        "id": col.TextColumn("id", required=True, validate=r"^[A-Za-z0-9_\-]+$",
                             help="letters, digits, _ and -; paths refer to teachers by it"),
        "arch": col.SelectboxColumn("architecture", options=arch_options(*(t.get("arch") for t in d["teachers"])),
                                    required=True, help="PathScope's models, torchvision:NAME or timm:NAME"),
        "source": col.SelectboxColumn("source", options=SOURCE_KINDS, required=True, default="train",
                                      help="train: inside this run · run: a finished run of this workspace · "
                                           "checkpoint: an imported file · pretrained: the published weights of "
                                           "a torchvision:/timm: model (a file in the checkpoint column stands in "
                                           "for the download)"),
        "epochs": col.NumberColumn("epochs (train)", min_value=1, step=1, default=10),
        "run_id": col.SelectboxColumn("run (source: run)", options=list(runs), format_func=lambda r: runs.get(r, r)),
        "checkpoint": col.SelectboxColumn("checkpoint (source: checkpoint)", options=files,
                                          format_func=lambda p: Path(p).name),
    }


def teachers_section(d: dict[str, Any], home: str) -> None:
    edited = st.data_editor(teachers_frame(d["teachers"]), key=table_key("teachers"), num_rows="dynamic",
                            hide_index=True, column_config=teacher_columns(d, home))
    if table_edited("teachers"):
        teachers = teachers_from_frame(edited, d["teachers"])
        d["paths"] = retarget_paths(d["paths"], renamed_teachers(d["teachers"], teachers))
        d["teachers"] = teachers
        commit_tables("teachers", "paths")
    checkpoint_upload(d, home)


def student_section(d: dict[str, Any], home: str, problems: list[str]) -> None:
    student = d["student"]
    c1, c2 = st.columns([1, 2])
    with c1:
        arch = choice("Student architecture", arch_options(student["arch"]), student["arch"], "student.arch",
                      accept_new_options=True, help="PathScope's models, or any torchvision:NAME or timm:NAME")
    if arch != student["arch"]:
        student["arch_params"] = {}  # params of one architecture mean nothing to another
    student["arch"] = arch
    accepted = model_params(arch) if arch in MODELS else {}
    with c2:
        # The arch is part of the key, so switching architecture redraws the params from the dict.
        student["arch_params"] = mapping_input(
            "Architecture params (YAML)", student["arch_params"], f"student.arch_params.{arch}",
            "student.arch_params", problems,
        )
        st.caption("Accepted: " + (", ".join(f"{k} (default {v})" for k, v in accepted.items()) or "none"))
    student["source"] = student_source_inputs(student.get("source") or {"kind": "scratch"}, home)


def student_source_inputs(source: dict[str, Any], home: str) -> dict[str, Any]:
    c1, c2 = st.columns([1, 2])
    with c1:
        kind = choice("Start from", STUDENT_SOURCE_KINDS, source.get("kind", "scratch"), "student.source.kind",
                      help="scratch: random weights (seeded) · pretrained: the published weights of a "
                           "torchvision:/timm: model · checkpoint: an imported file · run: a finished run's model. "
                           "A head of the wrong size is replaced by a fresh one")
    path, run_id = source.get("path"), source.get("run_id")
    with c2:
        if kind in ("checkpoint", "pretrained"):
            files = checkpoint_files(home, [path] if path else [])
            label = "Checkpoint file" if kind == "checkpoint" else "Local copy of the weights (optional)"
            path = choice(label, files, path, f"student.source.path.{kind}", format_func=lambda p: Path(p).name,
                          placeholder="the library's download cache" if kind == "pretrained" else "upload one above")
        elif kind == "run":
            runs = finished_runs(home)
            run_id = choice("Run", list(runs), run_id, "student.source.run_id", format_func=lambda r: runs.get(r, r))
    return student_source(kind, path, run_id)
