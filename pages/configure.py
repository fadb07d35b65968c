"""Configure: build a RunSpec with forms and tables, validate it as you type, launch it.

The form's state and widget keys are app/configure_state.py's; the Dataset section is app/configure_data.py, the
Teachers and Student sections app/configure_models.py; the paths, weighting, method, diagnostics, validation and
launch are here.
"""
import json
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import streamlit as st
import yaml

from app import cached
from app.configure_data import dataset_section
from app.configure_models import student_section, teachers_section
from app.configure_state import (
    CFG, choice, commit_tables, key, mapping_input, replace_spec, show_errors, spec_dict, table_edited,
    table_key,
)
from app.jobs import ACTIVE, get_job, job_failed, job_progress
from app.nav import page_file
from app.param_inputs import params_inputs
from app.spec_form import (
    SECTIONS, candidate_paths, errors_by_section, merge_paths, parse_seeds, paths_frame, paths_from_frame,
    teacher_check_frame,
)
from app.widgets import DEMO_SPEC, go_live, user_errors
from app.writes import RayTarget, plan, submit_comparison, submit_run, submit_teacher_check
from engine.executors.base import ExecutorError
from engine.comparison import check_variant
from engine.diagnostics.probe import auto_every
from engine.models import MODELS
from engine.models.spots import SpotInfo, list_spots
from engine.paths import DISTILLERS
from engine.methods import METHODS
from engine.registry import Registry
from engine.spec import OptimizerSpec, RunSpec, SpecError, load_spec, parse_spec, printable, spec_to_yaml
from engine.spec_yaml import spec_data_from_bytes
from engine.weightings import WEIGHTINGS

CHECK_JOB = "cfg_teacher_check_job"
UPLOAD_SEEN = "cfg_upload_seen"
OPTIMIZERS = list(get_args(OptimizerSpec.model_fields["name"].annotation))
NO_METHOD = "none — each path's distiller"


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
