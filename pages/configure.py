"""Configure: build a RunSpec with forms and tables, validate it as you type, launch it.

The form's state is one RunSpec-shaped dict in st.session_state[CFG]. Widget keys carry a
version number: replacing the whole spec (upload, reset) bumps it so every widget starts
again from the new dict. Table edits are committed into the dict as soon as they happen
and the table is redrawn from the dict under a new key, so an edit is never applied twice.
"""
import re
import secrets
import time
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import streamlit as st
import yaml
from pydantic import ValidationError

from app import cached
from app.nav import page_file
from app.spec_form import (
    SECTIONS, SOURCE_KINDS, candidate_paths, comparison_variants, errors_by_section, merge_paths, parse_seeds,
    paths_frame, paths_from_frame, renamed_teachers, retarget_paths, teachers_frame, teachers_from_frame,
)
from app.widgets import DEMO_SPEC, go_live, submit_run, submit_runs, user_errors
from engine.aggregators import AGGREGATORS
from engine.data import DATASETS, dataset_signature, load_dataset
from engine.data.bundle import DatasetError
from engine.diagnostics.probe import auto_every
from engine.models import MODELS, model_params
from engine.models.spots import SpotInfo, list_spots
from engine.paths import DISTILLERS
from engine.registry import UnknownName
from engine.spec import (
    DatasetSpec, OptimizerSpec, RunSpec, SpecError, load_spec, parse_spec, spec_from_yaml,
    spec_to_dict, spec_to_yaml,
)
from engine.validate import validate_spec

CFG = "cfg_spec"
VER = "cfg_ver"
TABLE_VERS = {"teachers": "cfg_teachers_ver", "paths": "cfg_paths_ver"}
UPLOAD_SEEN = "cfg_upload_seen"
SAVED_CHECKPOINTS = "cfg_saved_checkpoints"
OPTIMIZERS = list(get_args(OptimizerSpec.model_fields["name"].annotation))
AUGMENTS = list(get_args(DatasetSpec.model_fields["augment"].annotation))
EDIT_FIELDS = ("edited_rows", "added_rows", "deleted_rows")


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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problems.append(f"{field}: not valid YAML ({' '.join(str(err).split())})")
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
    try:
        spec = spec_from_yaml(file.getvalue().decode("utf-8"))
    except UnicodeDecodeError:
        return False, f"{file.name}: not a UTF-8 text file, so not a YAML spec"
    except SpecError as err:
        return False, f"{file.name} was not loaded:\n" + "\n".join(f"- `{line}`" for line in err.errors)
    replace_spec(spec)
    return True, f"Loaded {file.name} into the form."


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
        ds["augment"] = choice("Augmentation", AUGMENTS, ds["augment"], "dataset.augment")
    c1, c2 = st.columns([3, 1])
    ds["root"] = c1.text_input("Data folder (optional)", ds["root"] or "", key=key("dataset.root"),
                               help="Where the dataset's files are; empty = the dataset's default place").strip() or None
    ds["download"] = c2.checkbox("Allow download", ds["download"], key=key("dataset.download"),
                                 help="Let the worker download the files (torchvision datasets)")
    signature = input_signature(ds)
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    if signature is not None:
        shape, classes = signature
        c1.caption(f"Input {'×'.join(map(str, shape))} · {classes} classes")
    if c2.button("Check the data files", icon=":material/folder_open:",
                 help="Reads the dataset here (never downloads); the worker reads it again when a run starts"):
        check_data_files(ds)
    return signature


def finished_runs(home: str) -> dict[str, str]:
    runs = cached.runs(home)
    done = runs[runs["status"] == "done"]
    return dict(zip(done["id"], done["label"]))


def uploads_dir(home: str) -> Path:
    return Path(home) / "uploads"


def save_checkpoint(home: str, file: Any) -> Path:
    folder = uploads_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    # Only the base name, made filesystem-safe: an uploaded name must not pick the folder.
    target = folder / re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(file.name).name)
    target.write_bytes(file.getvalue())
    return target


def checkpoint_upload(home: str) -> None:
    file = st.file_uploader("Import a teacher checkpoint (.pt, .pth)", type=["pt", "pth"], key="cfg_ckpt",
                            help="Saved in the workspace's uploads folder; loaded with weights_only by the worker")
    saved = st.session_state.setdefault(SAVED_CHECKPOINTS, {})
    if file is not None and file.file_id not in saved:
        saved[file.file_id] = str(save_checkpoint(home, file))
    if file is not None:
        st.success(f"Saved as {saved[file.file_id]}: pick it in a teacher's checkpoint column (source: checkpoint).")


def teacher_columns(d: dict[str, Any], home: str) -> dict[str, Any]:
    runs = finished_runs(home)
    current = [t["source"].get("path") for t in d["teachers"] if t["source"].get("path")]
    files = sorted({*map(str, uploads_dir(home).glob("*.pt*")), *current})
    col = st.column_config
    return {
        "id": col.TextColumn("id", required=True, validate=r"^[A-Za-z0-9_\-]+$",
                             help="letters, digits, _ and -; paths refer to teachers by it"),
        "arch": col.SelectboxColumn("architecture", options=MODELS.names(), required=True),
        "source": col.SelectboxColumn("source", options=SOURCE_KINDS, required=True, default="train",
                                      help="train: inside this run · run: a finished run of this workspace · "
                                           "checkpoint: an imported file"),
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
    checkpoint_upload(home)


def student_section(d: dict[str, Any], problems: list[str]) -> None:
    student = d["student"]
    c1, c2 = st.columns([1, 2])
    with c1:
        arch = choice("Student architecture", MODELS.names(), student["arch"], "student.arch")
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


def paths_section(d: dict[str, Any], signature: tuple[tuple[int, ...], int] | None) -> None:
    spots = spot_table(d, signature)
    edited = st.data_editor(paths_frame(d["paths"]), key=table_key("paths"), num_rows="dynamic",
                            hide_index=True, column_config=path_columns(d, spots))
    if table_edited("paths"):
        d["paths"] = paths_from_frame(edited, d["paths"])
        commit_tables("paths")
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


def aggregator_section(d: dict[str, Any], problems: list[str]) -> None:
    agg = d["aggregator"]
    descriptions = {e.name: e.description for e in AGGREGATORS}
    c1, c2 = st.columns([1, 2])
    with c1:
        name = choice("Aggregator", list(descriptions), agg["name"], "aggregator.name")
    if name != agg["name"]:
        agg["params"] = {}  # each aggregator has its own params
    agg["name"] = name
    with c2:
        agg["params"] = mapping_input("Aggregator params (YAML)", agg["params"], f"aggregator.params.{name}",
                                      "aggregator.params", problems)
    if name in descriptions:
        st.caption(descriptions[name])


def diagnostics_section(d: dict[str, Any]) -> None:
    diag = d["diagnostics"]
    c1, c2 = st.columns(2, vertical_alignment="center")
    diag["enabled"] = c1.checkbox(
        "Negative-transfer diagnostics", bool(diag["enabled"]), key=key("diagnostics.enabled"),
        help="Probe every path's gradient against the task and validation gradients and flag the paths that "
             "hurt (the Negative transfer page)")
    every = c2.number_input("probe every N steps (empty = auto)", min_value=1, value=diag["every"], step=1,
                            placeholder="auto", key=key("diagnostics.every"), disabled=not diag["enabled"])
    diag["every"] = None if every is None else int(every)
    active = sum(1 for p in d["paths"] if p.get("enabled", True))
    # The cost is what decides the interval, so it is stated next to it.
    st.caption(f"A probe costs about {active + 2} extra backward passes ({active} path(s) + task + validation); "
               f"auto probes every {auto_every(active)} steps, about a tenth of the training time.")


# ---------------------------------------------------------------- validation and actions
def check(d: dict[str, Any], home: str) -> tuple[RunSpec | None, list[str]]:
    try:
        spec = parse_spec(d)
    except SpecError as err:
        return None, err.errors
    try:
        return spec, validate_spec(spec, Path(home))
    except SpecError as err:  # e.g. a teacher run whose stored spec no longer parses
        return spec, err.errors


def actions(d: dict[str, Any], spec: RunSpec | None, errors: list[str], home: str) -> None:
    if errors:
        st.error(f"{len(errors)} problem(s) to fix before launching; each is listed under its section above.")
    else:
        st.success("The spec is valid.")
    c1, c2, c3 = st.columns(3)
    if c1.button("Launch run", type="primary", icon=":material/rocket_launch:", disabled=bool(errors) or spec is None):
        submit_run(Path(home), spec)
        go_live()
    text = spec_to_yaml(spec) if spec is not None else yaml.safe_dump(d, sort_keys=False)
    c2.download_button("Download spec (YAML)", text, file_name=f"{d.get('name') or 'run'}.yaml",
                       mime="application/x-yaml", icon=":material/download:", on_click="ignore")
    if c3.button("Reset to the demo spec", icon=":material/restart_alt:"):
        replace_spec(load_spec(DEMO_SPEC))
        st.rerun()


def launch_comparison(d: dict[str, Any], aggregators: list[str], seeds: list[int], home: str) -> None:
    """Queue every valid (aggregator, seed) variant in one new group; list the invalid ones with their errors."""
    valid: list[RunSpec] = []
    invalid: list[tuple[str, list[str]]] = []
    with st.spinner(f"Checking {len(aggregators) * len(seeds)} variants…"):
        for variant in comparison_variants(d, aggregators, seeds):
            spec, errors = check(variant, home)
            if errors or spec is None:
                invalid.append((variant["name"], errors))
            else:
                valid.append(spec)
    if valid:
        group_id = f"cmp-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        submit_runs(Path(home), valid, group_id)
        st.success(f"Queued {len(valid)} run(s) in group `{group_id}`.")
        st.page_link(page_file("compare"), label="Compare them by aggregator", icon=":material/compare_arrows:")
    for name, errors in invalid:
        st.error(f"Not launched: **{name}**\n\n" + "\n".join(f"- `{line}`" for line in errors))


def comparison_section(d: dict[str, Any], home: str) -> None:
    st.subheader("Launch a comparison")
    st.caption("One run of the spec above per aggregator and seed, in one group that Compare summarises "
               "by aggregator. Aggregator params are kept for the spec's own aggregator only.")
    names = AGGREGATORS.names()
    current = d["aggregator"]["name"]
    c1, c2 = st.columns([3, 1])
    chosen = c1.multiselect("Aggregators", names, default=[current] if current in names else [],
                            key=key("cmp.aggregators"))
    seeds_text = c2.text_input("Seeds", str(d["seed"]), key=key("cmp.seeds"), help="comma-separated, e.g. 0,1,2")
    if st.button("Launch comparison", icon=":material/stacked_bar_chart:", disabled=not chosen):
        try:
            seeds = parse_seeds(seeds_text)
        except ValueError as err:
            st.error(f"Seeds: {err}")
            return
        launch_comparison(d, chosen, seeds, home)


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
    student_section(d, problems)
    slots["student"] = st.empty()
    st.subheader("Paths")
    paths_section(d, signature)
    slots["paths"] = st.empty()
    st.subheader("Aggregator")
    aggregator_section(d, problems)
    slots["aggregator"] = st.empty()
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
