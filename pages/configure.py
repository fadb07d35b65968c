"""Configure: build a RunSpec with forms and tables, validate it as you type, launch it.

The form's state is one RunSpec-shaped dict in st.session_state[CFG]. Widget keys carry a
version number: replacing the whole spec (upload, reset) bumps it so every widget starts
again from the new dict. Table edits are committed into the dict as soon as they happen
and the table is redrawn from the dict under a new key, so an edit is never applied twice.
"""
import json
import re
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import streamlit as st
import yaml
from pydantic import ValidationError

from app import cached
from app.jobs import ACTIVE, get_job, job_failed, job_progress
from app.nav import page_file
from app.param_inputs import params_inputs, yaml_or_problem
from app.spec_form import (
    SECTIONS, SOURCE_KINDS, STUDENT_SOURCE_KINDS, candidate_paths, errors_by_section,
    merge_paths, parse_seeds, paths_frame, paths_from_frame, renamed_teachers, retarget_paths, student_source,
    teacher_check_frame, teachers_frame, teachers_from_frame,
)
from app.widgets import DEMO_SPEC, go_live, user_errors
from app.writes import (
    RayTarget, plan, save_checkpoint, submit_comparison, submit_run, submit_teacher_check, uploads_dir,
)
from engine.executors.base import ExecutorError
from engine.comparison import check_variant
from engine.data import DATASETS, dataset_signature, load_dataset
from engine.data.bundle import DatasetError
from engine.data.image_folder import describe_image_folder
from engine.diagnostics.probe import auto_every
from engine.models import MODELS, model_params
from engine.models.checkpoint import CHECKPOINT_EXTENSIONS, CheckpointError, CheckpointInfo, describe_checkpoint
from engine.models.families import FAMILIES, family_models
from engine.models.spots import SpotInfo, list_spots
from engine.paths import DISTILLERS
from engine.methods import METHODS
from engine.registry import Registry, UnknownName
from engine.spec import (
    DatasetSpec, OptimizerSpec, RunSpec, SpecError, load_spec, parse_spec, printable,
    spec_data_from_bytes, spec_to_dict, spec_to_yaml,
)
from engine.weightings import WEIGHTINGS

CFG = "cfg_spec"
CHECK_JOB = "cfg_teacher_check_job"
VER = "cfg_ver"
TABLE_VERS = {"teachers": "cfg_teachers_ver", "paths": "cfg_paths_ver"}
UPLOAD_SEEN = "cfg_upload_seen"
SAVED_CHECKPOINTS = "cfg_saved_checkpoints"
OPTIMIZERS = list(get_args(OptimizerSpec.model_fields["name"].annotation))
AUGMENTS = list(get_args(DatasetSpec.model_fields["augment"].annotation))
NORMALIZE_MODES = ["dataset", "imagenet", "none", "custom"]
STREAM_MODES = list(get_args(DatasetSpec.model_fields["stream"].annotation))
EDIT_FIELDS = ("edited_rows", "added_rows", "deleted_rows")
NO_METHOD = "none — each path's distiller"


# ---------------------------------------------------------------- state
def spec_dict() -> dict[str, Any]:
    return st.session_state[CFG]


def key(name: str) -> str:
    return f"cfg{st.session_state[VER]}.{name}"


def table_key(table: str) -> str:
    return f"{key(table)}.{st.session_state[TABLE_VERS[table]]}"


def replace_spec(spec: RunSpec) -> None:
    st.session_state[CFG] = spec_to_dict(spec)
    st.session_state[VER] = st.session_state.get(VER, -1) + 1
    for name in TABLE_VERS.values():
        st.session_state[name] = 0


def table_edited(table: str) -> bool:
    state = st.session_state.get(table_key(table)) or {}
    return any(state.get(field) for field in EDIT_FIELDS)


def commit_tables(*tables: str) -> None:
    """After folding a table edit into the dict: redraw the tables from it under fresh keys."""
    for table in tables:
        st.session_state[TABLE_VERS[table]] += 1
    st.rerun()


# ---------------------------------------------------------------- small inputs
def choice(label: str, options: list[str], current: Any, name: str, **kwargs: Any) -> Any:
    """A selectbox that keeps a value it does not know (from a YAML file) so validation can name it."""
    options = list(options) + ([current] if current is not None and current not in options else [])
    index = options.index(current) if current in options else None
    return st.selectbox(label, options, index=index, key=key(name), **kwargs)


def mapping_input(label: str, value: dict[str, Any], name: str, field: str, problems: list[str]) -> dict[str, Any]:
    """A one-line YAML mapping (e.g. ``{hidden: [64]}``); a bad entry keeps the old value and is reported."""
    shown = yaml.safe_dump(value, default_flow_style=True).strip() if value else "{}"
    text = st.text_input(label, shown, key=key(name))
    data, parsed = yaml_or_problem(text, field, problems, value)
    if not parsed:
        return value
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{field}: expected a mapping such as {{name: value}}, got {type(data).__name__}")
        return value
    return data


def show_errors(errors: list[str]) -> None:
    lines = []
    for error in errors:
        field, sep, message = error.partition(": ")
        lines.append(f"- `{field}`: {message}" if sep else f"- {error}")
    st.error("\n".join(lines))


# ---------------------------------------------------------------- spec upload
def read_uploaded_spec(file: Any) -> tuple[bool, str]:
    name = printable(file.name)
    try:  # the engine's reader: size cap, UTF-8 check, and the YAML loader that refuses alias bombs
        spec = parse_spec(spec_data_from_bytes(file.getvalue(), name))
    except SpecError as err:
        return False, f"{name} was not loaded:\n" + "\n".join(f"- `{line}`" for line in err.errors)
    replace_spec(spec)
    return True, f"Loaded {name} into the form."


def upload_spec() -> None:
    file = st.file_uploader("Upload spec (YAML)", type=["yaml", "yml"], key="cfg_upload")
    if file is None:
        return
    seen = st.session_state.get(UPLOAD_SEEN)
    # Apply each uploaded file once: re-applying it on every rerun would undo later edits.
    if seen is None or seen[0] != file.file_id:
        st.session_state[UPLOAD_SEEN] = (file.file_id, *read_uploaded_spec(file))
    _, ok, message = st.session_state[UPLOAD_SEEN]
    (st.success if ok else st.error)(message)


# ---------------------------------------------------------------- sections
def run_section(d: dict[str, Any]) -> None:
    c1, c2, c3, c4, c5 = st.columns([3, 1, 1, 1, 1])
    d["name"] = c1.text_input("Run name", d["name"], key=key("name"), max_chars=120)
    d["epochs"] = int(c2.number_input("Epochs", min_value=1, value=int(d["epochs"]), step=1, key=key("epochs")))
    d["seed"] = int(c3.number_input("Seed", value=int(d["seed"]), step=1, key=key("seed")))
    opt = d["optimizer"]
    with c4:
        opt["name"] = choice("Optimizer", OPTIMIZERS, opt["name"], "optimizer.name")
    # No min_value: a spec's tiny lr must still display; parse_spec rejects lr <= 0 by field.
    opt["lr"] = float(c5.number_input("Learning rate", value=float(opt["lr"]), step=0.01, format="%g",
                                      key=key("optimizer.lr")))


def input_signature(ds: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of the dataset, read without loading or downloading it."""
    try:
        return dataset_signature(DatasetSpec.model_validate(ds))
    except (ValidationError, DatasetError, UnknownName):
        return None  # parse_spec / validate_spec name the problem under the Dataset section


def check_data_files(ds: dict[str, Any]) -> None:
    """Load the dataset once on request: shapes come from the registry, missing files only show here."""
    try:
        bundle = load_dataset(DatasetSpec.model_validate({**ds, "download": False}))
    except (ValidationError, DatasetError, UnknownName) as err:
        st.error(f"The data files cannot be read: {err}")
        return
    st.success(f"Found {len(bundle.train)} train, {len(bundle.val)} val and {len(bundle.test)} test samples.")


def dataset_section(d: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
    ds = d["dataset"]
    descriptions = {e.name: e.description for e in DATASETS}
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    with c1:
        ds["name"] = choice("Dataset", list(descriptions), ds["name"], "dataset.name",
                            help="\n\n".join(f"**{n}**: {t}" for n, t in descriptions.items()))
    ds["batch_size"] = int(c2.number_input("Batch size", min_value=1, value=int(ds["batch_size"]), step=16,
                                           key=key("dataset.batch_size")))
    train_size = c3.number_input("Train samples", min_value=1, value=ds["train_size"], step=100,
                                 placeholder="all", key=key("dataset.train_size"),
                                 help="Cap on training samples for quick runs; empty = all")
    ds["train_size"] = None if train_size is None else int(train_size)
    with c4:
        ds["augment"] = choice("Augmentation", AUGMENTS, ds["augment"], "dataset.augment",
                               help="crop: random crop of the padded image · flip_crop: the same plus a horizontal "
                                    "flip · random_resized_crop: a random area and aspect ratio resized back, "
                                    "plus a flip")
    c1, c2 = st.columns([3, 1])
    ds["root"] = c1.text_input(
        "Data folder", ds["root"] or "", key=key("dataset.root"),
        help="Where the dataset's files are; empty = the dataset's default place. For image_folder: a folder of "
             "class subfolders, or one holding train/ (and optionally val/ and test/) folders of them",
    ).strip() or None
    ds["download"] = c2.checkbox("Allow download", ds["download"], key=key("dataset.download"),
                                 help="Let the worker download the files (torchvision datasets)")
    if ds["name"] == "image_folder":
        layout_note(ds)
    with st.expander("Image size, normalisation and splits"):
        preprocessing_inputs(ds)
    signature = input_signature(ds)
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    if signature is not None:
        shape, classes = signature
        c1.caption(f"Input {'×'.join(map(str, shape))} · {classes} classes")
    if c2.button("Check the data files", icon=":material/folder_open:",
                 help="Reads the dataset here (never downloads); the worker reads it again when a run starts"):
        check_data_files(ds)
    return signature


def layout_note(ds: dict[str, Any]) -> None:
    """What the worker will find under an image folder (train/test folders or one set of classes)."""
    if not ds["root"]:
        st.info("Give the folder of your images: class subfolders (`cat/`, `dog/`…), or `train/` and `test/` "
                "folders of them as torchvision's ImageFolder expects.", icon=":material/folder:")
        return
    try:
        st.caption(describe_image_folder(ds["root"], ds["val_fraction"], ds["test_fraction"]))
    except DatasetError as err:
        st.warning(str(err), icon=":material/folder_off:")


def preprocessing_inputs(ds: dict[str, Any]) -> None:
    c1, c2, c3 = st.columns(3)
    size = c1.number_input("Image size (px)", min_value=1, value=ds["image_size"], step=32, placeholder="as stored",
                           key=key("dataset.image_size"),
                           help="Resize the shorter side to this and centre-crop a square (224 for ImageNet models); "
                                "empty = the images' own size")
    ds["image_size"] = None if size is None else int(size)
    ds["val_fraction"] = c2.number_input("Validation share", min_value=0.0, max_value=0.95, step=0.05,
                                         value=float(ds["val_fraction"]), key=key("dataset.val_fraction"),
                                         help="Drawn from the training images (seeded) when there is no val/ folder")
    ds["test_fraction"] = c3.number_input("Test share", min_value=0.01, max_value=0.95, step=0.05,
                                          value=float(ds["test_fraction"]), key=key("dataset.test_fraction"),
                                          help="Drawn from the training images when the data has no test split")
    c1, c2, c3 = st.columns([1, 2, 1])
    current = ds["normalize"] if isinstance(ds["normalize"], str) else "custom"
    with c1:
        mode = choice("Normalisation", NORMALIZE_MODES, current, "dataset.normalize",
                      help="dataset: the train split's own mean and std · imagenet: the values ImageNet-pretrained "
                           "models and the akamaster CIFAR checkpoints expect · none: pixels in [0, 1] · custom: "
                           "your own per-channel mean and std. Stored with the run and the exported student")
    if mode == "custom":
        with c2:
            ds["normalize"] = custom_normalisation(ds["normalize"])
    else:
        ds["normalize"] = mode
    with c3:
        ds["stream"] = choice("Read images", STREAM_MODES, ds["stream"], "dataset.stream",
                              help="auto: from memory unless the decoded images exceed the memory limit, then "
                                   "from disk batch by batch · on: always from disk · off: always in memory")
    if ds["stream"] != "off":
        ds["memory_limit_mb"] = int(c3.number_input("Memory limit (MB)", min_value=1, step=256,
                                                    value=int(ds["memory_limit_mb"]), key=key("dataset.memory_limit_mb")))


def custom_normalisation(current: Any) -> dict[str, Any]:
    values = current if isinstance(current, dict) else {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    text = st.text_input("Mean and std per channel", f"{_numbers(values['mean'])} / {_numbers(values['std'])}",
                         key=key("dataset.normalize.values"), help="two comma-separated lists, e.g. "
                         "0.49, 0.48, 0.45 / 0.25, 0.24, 0.26 (pixels in [0, 1])")
    mean, _, std = text.partition("/")
    try:
        return {"mean": _parse_numbers(mean), "std": _parse_numbers(std)}
    except ValueError:
        return {"mean": mean.strip(), "std": std.strip()}  # left for parse_spec to name under dataset.normalize


def _numbers(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _parse_numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def finished_runs(home: str) -> dict[str, str]:
    runs = cached.runs(home, include_archived=True)  # an archived run's student is still a teacher to pick
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
    if c2.button(f"Replace the teachers with it", icon=":material/swap_horiz:", key=key("ckpt.replace"),
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


def model_spots(arch: str, params: Any, signature: tuple[tuple[int, ...], int] | None) -> list[SpotInfo]:
    if signature is None or arch not in MODELS or not isinstance(params, dict):
        return []
    try:
        return list_spots(arch, signature[0], signature[1], params)
    except (TypeError, ValueError, RuntimeError):
        return []  # validate_spec reports why this model cannot be built


def spot_label(info: SpotInfo) -> str:
    return f"{info.name} · {info.kind} {'×'.join(map(str, info.shape))}"


def spot_table(d: dict[str, Any], signature: tuple[tuple[int, ...], int] | None) -> dict[str, list[SpotInfo]]:
    """Spots of every model in the spec: 'student' and each teacher id."""
    found = {"student": model_spots(d["student"]["arch"], d["student"]["arch_params"], signature)}
    for teacher in d["teachers"]:
        if teacher.get("id"):
            found[teacher["id"]] = model_spots(teacher.get("arch"), teacher.get("arch_params", {}), signature)
    return found


def path_columns(d: dict[str, Any], spots: dict[str, list[SpotInfo]]) -> dict[str, Any]:
    teacher_ids = [t["id"] for t in d["teachers"] if t.get("id")]
    teacher_spots = [s for tid in teacher_ids for s in spots.get(tid, [])]
    # A spot name shows its shape when all teachers agree on it; the Spots table has the rest.
    shapes: dict[str, set[str]] = {}
    for info in teacher_spots:
        shapes.setdefault(info.name, set()).add(spot_label(info))
    teacher_labels = {name: next(iter(labels)) if len(labels) == 1 else name for name, labels in shapes.items()}
    student_labels = {info.name: spot_label(info) for info in spots["student"]}

    def with_current(options: list[str], field: str) -> list[str]:
        return list(dict.fromkeys([*options, *(p[field] for p in d["paths"] if p.get(field))]))

    col = st.column_config
    return {
        "id": col.TextColumn("id", required=True, validate=r"^[A-Za-z0-9_\-.]+$"),
        "teacher": col.SelectboxColumn("teacher", options=with_current(teacher_ids, "teacher"), required=True),
        "teacher_spot": col.SelectboxColumn("teacher spot", options=with_current(list(teacher_labels), "teacher_spot"),
                                            required=True, format_func=lambda s: teacher_labels.get(s, s)),
        "student_spot": col.SelectboxColumn("student spot", options=with_current(list(student_labels), "student_spot"),
                                            required=True, format_func=lambda s: student_labels.get(s, s)),
        "distiller": col.SelectboxColumn("distiller", options=with_current(DISTILLERS.names(), "distiller"),
                                         required=True),
        "weight": col.NumberColumn("weight", min_value=0.0, format="%g",
                                   help="empty: the distiller's conventional weight"),
        "enabled": col.CheckboxColumn("enabled", default=True),
    }


def paths_section(d: dict[str, Any], signature: tuple[tuple[int, ...], int] | None,
                  problems: list[str] | None = None) -> None:
    spots = spot_table(d, signature)
    edited = st.data_editor(paths_frame(d["paths"]), key=table_key("paths"), num_rows="dynamic",
                            hide_index=True, column_config=path_columns(d, spots))
    if table_edited("paths"):
        d["paths"] = paths_from_frame(edited, d["paths"])
        commit_tables("paths")
    path_params_panel(d, [] if problems is None else problems)
    teacher_ids = [t["id"] for t in d["teachers"] if t.get("id")]
    if st.button("Add candidate paths", icon=":material/alt_route:", disabled=not teacher_ids,
                 help="For every teacher: stage to stage by resolution, pool to pool and logits to logits, each "
                      "with a fitting distiller. Logits paths start enabled; switch on the others you want."):
        d["paths"] = merge_paths(d["paths"], candidate_paths(teacher_ids, spots))
        commit_tables("paths")
    with st.expander("Spots of each model (name, kind, shape)"):
        rows = [(model, s.name, s.kind, "×".join(map(str, s.shape))) for model, infos in spots.items() for s in infos]
        st.dataframe(pd.DataFrame(rows, columns=["model", "spot", "kind", "shape"]), hide_index=True)
        st.markdown("\n".join(f"- **{e.name}**: {e.description}" for e in DISTILLERS))


def path_params_panel(d: dict[str, Any], problems: list[str]) -> None:
    """Pick a path, edit its distiller's parameters with inputs generated from the distiller's params model."""
    paths = d["paths"]
    if not paths:
        return
    with st.container(border=True):
        c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
        # The count is in the key: a path added or removed starts the picker again at the first path.
        i = c1.selectbox("Distiller parameters of path", range(len(paths)), key=key(f"paths.detail.{len(paths)}"),
                         format_func=lambda n: f"{paths[n].get('id') or f'paths[{n}]'} · {paths[n].get('distiller')}")
        path = paths[i]
        name = path.get("distiller")
        if name not in DISTILLERS:
            c2.caption("Pick a known distiller in the table to edit its parameters.")
            return
        c2.caption(DISTILLERS.entry(name).description)
        path["params"] = params_inputs(DISTILLERS.get(name).params_model, path.get("params") or {},
                                       key(f"paths.{i}.{path.get('id')}.{name}.params"), f"paths[{i}].params",
                                       problems, columns=4)


def plugin_params(part: dict[str, Any], registry: Registry, field: str, column: Any, problems: list[str]) -> None:
    """The params inputs of ``part`` ({name, params}), its description in ``column``: inputs generated from its
    params model, or a YAML mapping for a name the registry does not know (from a YAML file): it has no schema."""
    name = part["name"]
    if name not in registry:
        with column:
            part["params"] = mapping_input(f"{field.capitalize()} params (YAML)", part.get("params") or {},
                                           f"{field}.params.{name}", f"{field}.params", problems)
        return
    column.caption(registry.entry(name).description)
    # The name in the key starts another plugin's inputs afresh.
    part["params"] = params_inputs(registry.get(name).params_model, part.get("params") or {},
                                   key(f"{field}.params.{name}"), f"{field}.params", problems, columns=4)


def weighting_section(d: dict[str, Any], problems: list[str]) -> None:
    """How the terms are weighted: one of WEIGHTINGS, with its parameters."""
    weighting = d["weighting"]
    c1, c2 = st.columns([1, 2])
    with c1:
        name = choice("Weighting", WEIGHTINGS.names(), weighting["name"], "weighting.name",
                      help="\n\n".join(f"**{e.name}**: {e.description}" for e in WEIGHTINGS))
    if name != weighting["name"]:
        weighting["params"] = {}  # each weighting has its own params
    weighting["name"] = name
    plugin_params(weighting, WEIGHTINGS, "weighting", c2, problems)


def method_section(d: dict[str, Any], problems: list[str]) -> None:
    """What the paths compute: each path's distiller (no method), or one of METHODS with its parameters."""
    current = (d.get("method") or {}).get("name", NO_METHOD)
    c1, c2 = st.columns([1, 2])
    with c1:
        name = choice("Path method", [NO_METHOD, *METHODS.names()], current, "method.name",
                      help="\n\n".join(f"**{e.name}**: {e.description}" for e in METHODS))
    if name == NO_METHOD:
        d["method"] = None
        c2.caption("Each path's distiller on the whole batch, one term per path, weighted by the weighting above.")
        return
    if name != current:
        d["method"] = {"name": name, "params": {}}  # each method has its own params
    plugin_params(d["method"], METHODS, "method", c2, problems)


def diagnostics_section(d: dict[str, Any]) -> None:
    diag = d["diagnostics"]
    c1, c2 = st.columns(2, vertical_alignment="center")
    diag["enabled"] = c1.checkbox(
        "Negative-transfer diagnostics", bool(diag["enabled"]), key=key("diagnostics.enabled"),
        help="Measure how much each path's share of the update changes validation loss and flag the paths "
             "that raise it (the Negative transfer page)")
    every = c2.number_input("probe every N steps (empty = auto)", min_value=1, value=diag["every"], step=1,
                            placeholder="auto", key=key("diagnostics.every"), disabled=not diag["enabled"])
    diag["every"] = None if every is None else int(every)
    diag["geometry_confirms"] = c1.checkbox(
        "Let the gradient geometry confirm a flag", bool(diag.get("geometry_confirms", True)),
        key=key("diagnostics.geometry_confirms"), disabled=not diag["enabled"],
        help="On: a path is flagged once its measured effect and its gradient's direction agree (earlier flags). "
             "Off: only the effects' own consistency over the recent probes flags it: later flags, and none for a "
             "path that only makes the student less sure")
    active = sum(1 for p in d["paths"] if p.get("enabled", True))
    # The cost is what decides the interval, so it is stated next to it.
    st.caption(f"A probe costs about {active + 2} extra backward passes ({active} path(s) + task + validation) "
               f"and as many forward passes over held-out samples; auto probes every {auto_every(active)} steps, "
               "about a tenth of the training time.")


# ---------------------------------------------------------------- validation and actions
def check(d: dict[str, Any], home: str) -> tuple[RunSpec | None, list[str]]:
    return check_variant(d, Path(home))


def actions(d: dict[str, Any], spec: RunSpec | None, errors: list[str], home: str) -> None:
    if errors:
        st.error(f"{len(errors)} problem(s) to fix before launching; each is listed under its section above.")
    else:
        st.success("The spec is valid.")
    c1, c2, c3, c4 = st.columns(4)
    if c1.button("Launch run", type="primary", icon=":material/rocket_launch:", disabled=bool(errors) or spec is None):
        submit_run(Path(home), spec)
        go_live()
    if c2.button("Check teachers", icon=":material/fact_check:", disabled=bool(errors) or spec is None or not d["teachers"],
                 help="A worker measures each teacher's accuracy on the test split (once: the result is cached "
                      "with the teacher's outputs and reused by the run)"):
        st.session_state[CHECK_JOB] = (submit_teacher_check(home, spec_to_yaml(spec)), teacher_setup(spec))
    text = spec_to_yaml(spec) if spec is not None else yaml.safe_dump(d, sort_keys=False)
    c3.download_button("Download spec (YAML)", text, file_name=f"{d.get('name') or 'run'}.yaml",
                       mime="application/x-yaml", icon=":material/download:", on_click="ignore")
    if c4.button("Reset to the demo spec", icon=":material/restart_alt:"):
        replace_spec(load_spec(DEMO_SPEC))
        st.rerun()
    teacher_check_result(spec)


def teacher_setup(spec: RunSpec) -> str:
    """What a teacher check depends on: the data and the teachers (a change makes an old result stale)."""
    return json.dumps([spec.dataset.model_dump(mode="json"), [t.model_dump(mode="json") for t in spec.teachers]],
                      sort_keys=True)


def teacher_check_result(spec: RunSpec | None) -> None:
    if CHECK_JOB not in st.session_state:
        return
    job_id, setup = st.session_state[CHECK_JOB]
    job = get_job(cached.home(), job_id)
    if job is None:
        return
    if job.status in ACTIVE:
        job_progress(cached.home(), job.id, "Checking teachers")
        return
    if job.status != "done":
        job_failed(job, "The teacher check")
        return
    stale = spec is None or teacher_setup(spec) != setup
    st.markdown("**Teachers on the test split**" + (" (for an earlier version of the teachers or data: check "
                                                     "again)" if stale else ""))
    frame = teacher_check_frame(job.result)
    cols = st.columns(min(len(frame), 4) or 1)
    for n, row in enumerate(frame.itertuples(index=False)):
        with cols[n % len(cols)]:
            value = "—" if pd.isna(row.accuracy) else f"{row.accuracy:.2f} %"
            st.metric(f"teacher {row.teacher} · test acc", value,
                      help=f"{row.images:,} test images" if not pd.isna(row.images) else None)
            if row.note:
                st.caption(row.note)


def launch_comparison(d: dict[str, Any], weightings: list[str], seeds: list[int], home: str,
                      ray: RayTarget | None) -> None:
    """Start every valid (weighting, seed) variant in one new group; list the invalid ones with their errors."""
    with st.spinner(f"Checking {len(weightings) * len(seeds)} variants…"):
        comparison = plan(d, weightings, seeds, home)
    try:
        group_id, run_ids = submit_comparison(home, comparison, ray)
    except ExecutorError as err:
        st.error(f"Not launched on Ray: {err}")
        return
    if run_ids:
        where = "on Ray (a driver runs them in the background)" if ray else "for this machine's workers"
        st.success(f"Queued {len(run_ids)} run(s) in group `{group_id}` {where}.")
        st.page_link(page_file("compare"), label="Compare them by combination", icon=":material/compare_arrows:")
    for name, errors in comparison.invalid:
        st.error(f"Not launched: **{name}**\n\n" + "\n".join(f"- `{line}`" for line in errors))


def comparison_section(d: dict[str, Any], home: str) -> None:
    st.subheader("Launch a comparison")
    st.caption("One run of the spec above per weighting and seed, with the spec's path method, in one group that "
               "Compare summarises by combination. Weighting params are kept for the spec's own weighting only.")
    names = WEIGHTINGS.names()
    current = d["weighting"]["name"]
    c1, c2 = st.columns([3, 1])
    chosen = c1.multiselect("Weightings", names, default=[current] if current in names else [],
                            key=key("cmp.weightings"))
    seeds_text = c2.text_input("Seeds", str(d["seed"]), key=key("cmp.seeds"), help="comma-separated, e.g. 0,1,2")
    ray = ray_target()
    if st.button("Launch comparison", icon=":material/stacked_bar_chart:", disabled=not chosen):
        try:
            seeds = parse_seeds(seeds_text)
        except ValueError as err:
            st.error(f"Seeds: {err}")
            return
        launch_comparison(d, chosen, seeds, home, ray)


def ray_target() -> RayTarget | None:
    """Where the comparison runs: this machine's workers (None), or a Ray cluster and a storage folder."""
    where = st.radio("Run on", ["this machine", "Ray cluster"], horizontal=True, key=key("cmp.executor"),
                     help="Ray: each run is a Ray Tune trial (one GPU each where the cluster has GPUs)")
    if where == "this machine":
        return None
    c1, c2 = st.columns(2)
    address = c1.text_input("Ray address", "", key=key("cmp.ray_address"), placeholder="empty: Ray on this machine",
                            help="auto (the cluster `ray start` started here), or host:port of the cluster's head")
    storage = c2.text_input("Storage", "", key=key("cmp.ray_storage"), placeholder="empty: the workspace",
                            help="a folder every node can write (a shared file system): checkpoints and caches")
    return RayTarget(address.strip() or None, storage.strip() or None)


def main() -> None:
    st.title("Configure")
    home = cached.home()
    if CFG not in st.session_state:
        replace_spec(load_spec(DEMO_SPEC))
    with st.expander("Upload a spec (YAML) to fill the form"):
        upload_spec()
    d = spec_dict()
    problems: list[str] = []
    # Errors are known only once the whole form is read; each section keeps a slot for its own.
    slots = {}
    st.subheader("Run")
    run_section(d)
    slots["run"] = st.empty()
    st.subheader("Dataset")
    signature = dataset_section(d)
    slots["dataset"] = st.empty()
    st.subheader("Teachers")
    teachers_section(d, home)
    slots["teachers"] = st.empty()
    st.subheader("Student")
    student_section(d, home, problems)
    slots["student"] = st.empty()
    st.subheader("Paths")
    paths_section(d, signature, problems)
    slots["paths"] = st.empty()
    st.subheader("Weighting")
    weighting_section(d, problems)
    slots["weighting"] = st.empty()
    st.subheader("Path method")
    method_section(d, problems)
    slots["method"] = st.empty()
    st.subheader("Diagnostics")
    diagnostics_section(d)
    slots["diagnostics"] = st.empty()
    spec, errors = check(d, home)
    errors = problems + errors
    grouped = errors_by_section(errors)
    for section in SECTIONS:
        if grouped.get(section):
            with slots[section]:
                show_errors(grouped[section])
    if grouped.get(None):
        show_errors(grouped[None])
    actions(d, spec, errors, home)
    comparison_section(d, home)


with user_errors("Configure"):
    main()
