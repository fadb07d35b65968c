"""Attribution: where the student and each teacher look, sample by sample, and how the student's maps move
towards (or away from) each teacher's over training.

The page never computes a map: it queues explain jobs ("sample_index", "explain", "agreement") for a worker,
shows their progress while they run, and draws what they stored (job results, npz artifacts, "agree/*"
metrics).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import yaml
from pydantic import ValidationError

from app import attribution_charts as ac
from app import cached
from app.jobs import ACTIVE, get_job, job_failed, job_progress, latest_job
from app.writes import submit_job
from app.samples import SampleImages
from app.widgets import pick_run, picker_runs, user_errors
from engine.data.bundle import DatasetError
from engine.explain.cache import load_entry
from engine.explain.job import PHASE, TARGETS
from engine.explain.methods import METHODS, SMOOTHGRAD_DEFAULTS
from engine.explain.models import checkpoint_dir, epoch_checkpoints
from engine.registry import UnknownName
from engine.spec import DatasetSpec, spec_from_yaml
from engine.store import JobRow, RunRow, run_dir
from engine.vocabulary import AGREE_PREFIX

PLOT_CONFIG = {"displaylogo": False}
MAX_OPTIONS = 300  # samples listed in the picker after filtering and sorting
DEFAULT_PICKS = 4
AGREEMENT_DEFAULT_METHOD = "occlusion"  # on the planted demo it separates good and harmful teachers best
MAPS_DEFAULT_METHOD = "integrated_gradients"  # deterministic, and the method most readers know
EXPLAIN_BUTTON = "Explain the selected samples"
AGREEMENT_BUTTON = "Compute agreement over checkpoints"


# ---------------------------------------------------------------- helpers
def checkpoints(home: str, run_id: str) -> list[str]:
    """Saved checkpoints, final first, then the newest epoch first."""
    names = epoch_checkpoints(Path(home), run_id)[::-1]
    if (checkpoint_dir(Path(home), run_id) / "final.pt").is_file():
        names.insert(0, "final")
    return names


def default_index(names: list[str], wanted: str) -> int:
    return names.index(wanted) if wanted in names else 0


def run_images(run: RunRow) -> SampleImages | None:
    """The pictures and class names of the run's dataset, None when it cannot be loaded here."""
    try:
        data = yaml.safe_load(run.spec_yaml)
        section = data.get("dataset") if isinstance(data, dict) else None
        spec = DatasetSpec.model_validate(section if isinstance(section, dict) else {})
        return cached.sample_images(spec.model_dump_json())
    except (DatasetError, UnknownName, ValidationError, yaml.YAMLError, OSError):
        return None


def input_shape(run: RunRow) -> tuple[int, int, int] | None:
    """(C, H, W) of the run's dataset (for method defaults that depend on the image size), None if unknown."""
    images = run_images(run)
    if images is None:
        return None
    pixels = images.pixels
    return int(pixels.shape[3]), int(pixels.shape[1]), int(pixels.shape[2])


def class_names(run: RunRow) -> list[str] | None:
    images = run_images(run)
    return images.class_names if images is not None else None


@st.cache_data(max_entries=256, show_spinner=False)
def entry(path: str, mtime: float) -> dict[str, np.ndarray]:
    return load_entry(Path(path))


def load_artifact(home: str, run_id: str, name: str) -> dict[str, np.ndarray] | None:
    path = run_dir(Path(home), run_id) / name
    if not path.is_file():
        return None
    return entry(str(path), path.stat().st_mtime)


# ---------------------------------------------------------------- sample picker
def sample_index(home: str, run: RunRow, checkpoint: str) -> pd.DataFrame | None:
    """The sample table of the checkpoint, submitting the sample_index job the first time it is needed."""
    job = latest_job(home, run.id, "sample_index", checkpoint=checkpoint)
    if job is None:
        submit_job(home, run.id, "sample_index", {"checkpoint": checkpoint})
        job = latest_job(home, run.id, "sample_index", checkpoint=checkpoint)
    if job.status in ACTIVE:
        st.caption("Indexing the test split (labels, predictions, teacher disagreement) to pick samples from.")
        job_progress(home, job.id, "Sample index")
        return None
    arrays = load_artifact(home, run.id, job.result["file"]) if job.status == "done" else None
    if arrays is None:
        if job.status == "done":
            st.warning("The sample index file is missing from the run's folder.")
        else:
            job_failed(job, "Sample index")
        if st.button("Rebuild the sample index", key=f"attr-reindex-{run.id}-{checkpoint}"):
            submit_job(home, run.id, "sample_index", {"checkpoint": checkpoint})
            st.rerun()
        return None
    return ac.sample_table(arrays)


def sample_picker(table: pd.DataFrame, run_id: str, names: list[str] | None) -> list[int]:
    labels = sorted(int(c) for c in table["label"].unique())
    left, middle, right = st.columns(3)
    label = left.selectbox("Class", [None, *labels], key=f"attr-class-{run_id}",
                           format_func=lambda c: "all classes" if c is None else f"class {ac.class_label(c, names)}")
    misclassified = middle.checkbox("Misclassified by the student", key=f"attr-miscls-{run_id}")
    sort = right.radio("Order", ac.SORTS, key=f"attr-sort-{run_id}", horizontal=True)
    chosen = ac.filter_samples(table, label, misclassified, sort).head(MAX_OPTIONS)
    if chosen.empty:
        st.info("No test sample matches these filters: pick another class or untick "
                "“Misclassified by the student”.", icon=":material/filter_alt_off:")
        return []
    rows = chosen.set_index("sample")
    options = [int(s) for s in rows.index]

    def describe(sample: int) -> str:
        row = rows.loc[sample]
        return (f"#{sample} · label {ac.class_label(row['label'], names)} · "
                f"student {ac.class_label(row['student_pred'], names)} "
                f"({row['student_conf']:.0%}) · JS {row['disagreement']:.3f}")

    st.caption(f"{len(chosen)} sample(s) listed ({int(table['misclassified'].sum())} of {len(table)} "
               "test samples are misclassified by the student).")
    return st.multiselect("Samples", options, default=options[:DEFAULT_PICKS], format_func=describe,
                          key=f"attr-samples-{run_id}-{label}-{misclassified}-{sort}")


# ---------------------------------------------------------------- method and parameters
def param_input(method: str, name: str, default: Any, choices: tuple[str, ...] | None, key: str) -> Any:
    label = f"{name}"
    if choices:
        return st.selectbox(label, choices, index=choices.index(default), key=f"{key}-{method}-{name}")
    if isinstance(default, bool):
        return st.checkbox(label, value=default, key=f"{key}-{method}-{name}")
    if isinstance(default, int):
        return int(st.number_input(label, min_value=1, value=default, step=1, key=f"{key}-{method}-{name}"))
    if isinstance(default, float):
        return float(st.number_input(label, min_value=1e-6, value=default, key=f"{key}-{method}-{name}"))
    return default


def method_form(run: RunRow, key: str) -> dict[str, Any] | None:
    """The request (method, params, target, smoothgrad) chosen in the form."""
    names = list(METHODS.names())
    method = st.selectbox("Method", names, key=f"{key}-method", index=default_index(names, MAPS_DEFAULT_METHOD),
                          format_func=lambda n: f"{n} — {METHODS.entry(n).description}")
    spec = METHODS.get(method)
    shape = input_shape(run)
    if shape is None:
        st.caption("The dataset cannot be loaded here: the method's default parameters are used.")
        params: dict[str, Any] = {}
    else:
        defaults = spec.defaults(shape)
        params = {}
        if defaults:
            columns = st.columns(len(defaults))
            for column, (name, default) in zip(columns, defaults.items()):
                with column:
                    params[name] = param_input(method, name, default, spec.choices.get(name), key)
    left, right = st.columns(2)
    target = left.radio("Explain the logit of", TARGETS, horizontal=True, key=f"{key}-target",
                        format_func=lambda t: {"label": "the true label", "predicted": "each model's prediction"}[t])
    smooth = right.checkbox("SmoothGrad (average over noisy copies)", key=f"{key}-smooth",
                            help=f"captum's NoiseTunnel: {SMOOTHGRAD_DEFAULTS['nt_samples']} noisy copies, "
                                 f"noise std {SMOOTHGRAD_DEFAULTS['stdevs']} (normalised units)")
    request: dict[str, Any] = {"method": method, "target": target, "smoothgrad": bool(smooth)}
    if params:
        request["params"] = params
    return request


# ---------------------------------------------------------------- grid
def explain_section(home: str, run: RunRow, checkpoint: str, samples: list[int]) -> None:
    st.header("Attribution maps")
    request = method_form(run, key=f"attr-{run.id}")
    state_key = f"attr-explain-job-{run.id}"
    if st.button(EXPLAIN_BUTTON, type="primary", disabled=not samples, icon=":material/visibility:",
                 key=f"attr-explain-{run.id}", help="Queue a job computing the maps for the student and every teacher"):
        st.session_state[state_key] = submit_job(
            home, run.id, "explain", {**request, "samples": samples, "checkpoint": checkpoint})
    job_id = st.session_state.get(state_key)
    job = get_job(home, job_id) if job_id else latest_job(home, run.id, "explain")
    if job is None:
        st.info("Pick samples and a method, then press **" + EXPLAIN_BUTTON + "**: a worker computes the maps "
                "(cached, so a repeated request is instant).", icon=":material/visibility:")
        return
    if job.status in ACTIVE:
        job_progress(home, job.id, "Attribution maps")
        return
    if job.status != "done":
        job_failed(job, "Attribution maps")
        return
    grid(home, run, job)


def grid(home: str, run: RunRow, job: JobRow) -> None:
    result = job.result
    entries = {}
    for item in result["items"]:
        arrays = load_artifact(home, run.id, item["file"])
        if arrays is not None:
            entries[item["file"]] = arrays
    rows = ac.grid_rows(result, entries)
    if not rows:
        st.warning("The maps of this job are no longer in the run's folder: press the explain button again.")
        return
    st.caption(f"{result['method']} at checkpoint **{result['checkpoint']}** (target: {result['target']}"
               f"{', SmoothGrad' if result.get('smoothgrad') else ''}). Columns: the input, each teacher, "
               "the student; each row shares one colour scale (red positive, blue negative), bounded by the "
               "row's largest |attribution|. Under each map: that model's prediction and confidence.")
    for row in rows:
        fig = ac.sample_row_figure(row["sample"], row["label"], row["image"], row["cells"], class_names(run))
        st.plotly_chart(fig, key=f"attr-row-{job.id}-{row['sample']}", config=PLOT_CONFIG)


# ---------------------------------------------------------------- agreement
def agreement_section(home: str, run: RunRow, teacher_ids: list[str]) -> None:
    st.header("Agreement over training")
    st.caption("Per saved epoch, how closely the student's maps match each teacher's on a fixed probe set of "
               "test samples: Spearman rank correlation and top-k overlap of the most important pixels.")
    if not teacher_ids:
        st.info("This run has no teachers, so there is nothing to compare the student's maps with: "
                "launch a run with teachers from Configure.", icon=":material/group_off:")
        return
    if not epoch_checkpoints(Path(home), run.id):
        st.info("This run has no epoch checkpoints yet: agreement is measured at each saved epoch. "
                "Come back once the run has finished an epoch.", icon=":material/hourglass_empty:")
        return
    names = list(METHODS.names())
    method = st.selectbox("Agreement method", names, key=f"attr-agree-method-{run.id}",
                          index=default_index(names, AGREEMENT_DEFAULT_METHOD))
    if st.button(AGREEMENT_BUTTON, icon=":material/timeline:", key=f"attr-agree-{run.id}"):
        submit_job(home, run.id, "agreement", {"method": method})
    job = latest_job(home, run.id, "agreement")
    if job is not None and job.status in ACTIVE:
        job_progress(home, job.id, "Agreement")
    elif job is not None and job.status != "done":
        job_failed(job, "Agreement")
    version = "" if job is None else f"{job.id}:{job.status}"
    metrics = cached.phase_metrics(home, run.id, PHASE, version)
    metrics = metrics[metrics["key"].str.startswith(AGREE_PREFIX)]
    if metrics.empty:
        if job is None:
            st.info(f"Press **{AGREEMENT_BUTTON}** to measure it.", icon=":material/timeline:")
        return
    if job is not None and job.status == "done":
        st.caption(f"Measured with {job.result.get('method')} on {len(job.result.get('probe', []))} probe samples.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(ac.agreement_figure(metrics, teacher_ids, "spearman"), key=f"attr-spearman-{run.id}",
                        config=PLOT_CONFIG)
    with right:
        st.plotly_chart(ac.agreement_figure(metrics, teacher_ids, "topk"), key=f"attr-topk-{run.id}",
                        config=PLOT_CONFIG)


# ---------------------------------------------------------------- page
def run_view(home: str, run: RunRow) -> None:
    saved = checkpoints(home, run.id)
    if not saved:
        st.info(f"Run {run.id} has no saved checkpoint yet ({run.status}): maps need the student's weights. "
                "Come back once it has finished an epoch.", icon=":material/hourglass_empty:")
        return
    teacher_ids = [t.id for t in spec_from_yaml(run.spec_yaml).teachers]
    checkpoint = st.selectbox("Student checkpoint", saved, key=f"attr-checkpoint-{run.id}",
                              help="Teachers are frozen: only the student changes between checkpoints")
    st.header("Samples")
    table = sample_index(home, run, checkpoint)
    samples = sample_picker(table, run.id, class_names(run)) if table is not None else []
    if table is not None:
        explain_section(home, run, checkpoint, samples)
    agreement_section(home, run, teacher_ids)


def main() -> None:
    st.title("Attribution")
    home = cached.home()
    run = pick_run(home, picker_runs(home))
    if run is not None:
        run_view(home, run)


with user_errors("Attribution"):
    main()
