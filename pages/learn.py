"""Learn: distillation concepts shown live on the engine's own pieces.

Temperature uses a teacher this workspace trained (one forward pass on ten digits by
``engine.lessons``, cached by the file's mtime: the page never trains nor imports torch); paths
come from the model zoo's spots and the candidate proposer; the weighting toy runs the engine's
PCGrad and MGDA code; the negative-transfer lesson queues the planted-teacher demo for the worker.
"""
from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import cached, learn_charts
from app.nav import has_page, page_file
from app.widgets import DEMO_SPEC, user_errors
from app.writes import submit_run
from engine.lessons import LessonSamples, teacher_file_header
from engine.lessons import lesson_samples as engine_lesson_samples
from engine.lessons import teacher_logits as engine_teacher_logits
from engine.models import MODELS
from engine.models.spots import list_spots
from engine.paths.candidates import propose_candidates
from engine.runner import teacher_cache_path
from engine.spec import DatasetSpec, SpecError, TrainSource, load_spec, printable, spec_from_yaml
from engine.store import Store
from engine.validate import validate_spec

PLANTED_SPEC = DEMO_SPEC.with_name("digits_planted.yaml")
PLOT_CONFIG = {"displaylogo": False}
TEACHER_DIR = "teachers"
LESSON_DATASET = "digits"  # the page loads only this tiny embedded dataset for its samples
IMAGE_PX = 128
TTL_S = 2.0
WAIT_POLL_S = 3.0
DEMO_RUN_KEY = "learn_demo_run"
PLANTED_RUN_KEY = "learn_planted_run"
# Input presets for the path diagram: (input shape, classes, default teacher, default student).
PRESETS: dict[str, tuple[tuple[int, int, int], int, str, str]] = {
    "digits-sized: 1×8×8, 10 classes": ((1, 8, 8), 10, "small_cnn", "mlp"),
    "CIFAR-sized: 3×32×32, 100 classes": ((3, 32, 32), 100, "resnet56", "resnet20"),
}
WEIGHTING_LINES = {
    "equal": "the plain sum g₁ + g₂: the steeper loss dominates, and in a conflict the step can raise the other loss.",
    "uncertainty": "each gradient divided by twice its loss (Kendall's weights at their optimum, w = 1/(2L)): "
                   "losses of different scales count alike.",
    "pcgrad": "when g₁ · g₂ < 0, each gradient first loses its component along the other (dotted arrows, each "
              "orthogonal to the other gradient), then they are summed.",
    "mgda": "the shortest vector between g₁ and g₂ (the min-norm point of their segment): its step lowers both "
            "losses, and it vanishes when they are exactly opposed (a Pareto-stationary point).",
}


# ---------------------------------------------------------------- teachers and samples
@dataclass(frozen=True)
class TeacherFile:
    path: str
    mtime: float
    arch: str
    params_json: str  # the run spec's arch_params; "{}" for a file no run in the store names
    dataset_json: str
    label: str
    test_acc: float | None


def _run_teachers(home: Path) -> dict[Path, tuple[str, str, DatasetSpec]]:
    """Cache file -> (label, arch_params JSON, dataset) for every inline teacher a stored run names.

    Teacher files carry no dataset or params; the run that trained them does.
    """
    found: dict[Path, tuple[str, str, DatasetSpec]] = {}
    if not cached.workspace_exists(str(home)):
        return found
    with closing(Store(home, readonly=True)) as store:
        runs = store.list_runs()
    for run in reversed(runs):  # oldest first: the first run that trained a teacher names it
        try:
            spec = spec_from_yaml(run.spec_yaml)
        except SpecError:
            continue  # a spec stored by an older PathScope; its teachers stay unnamed
        for teacher in spec.teachers:
            if not isinstance(teacher.source, TrainSource):
                continue
            try:
                path = teacher_cache_path(teacher, spec, home).resolve()
            except RuntimeError:
                continue  # a run for a device this machine lacks cannot have trained a file here
            defect = f", planted defect {teacher.source.defect}" if teacher.source.defect != "none" else ""
            # The run id tells apart the teachers of runs that share a name (two demos of other lengths).
            found.setdefault(path, (f"{teacher.id} of {printable(run.name)} ({run.id}){defect}",
                                    json.dumps(teacher.arch_params),
                                    spec.dataset))
    return found


@st.cache_data(show_spinner=False, max_entries=64)
def _file_header(path: str, mtime: float) -> tuple[str, float | None]:
    """(arch, test accuracy) saved in a teacher file; keyed by mtime so a rewritten file is read again."""
    return teacher_file_header(path)


# cache_resource, not cache_data: classes defined in a page script cannot be pickled.
@st.cache_resource(ttl=TTL_S, show_spinner=False)
def teacher_files(home_dir: str) -> tuple[list[TeacherFile], int]:
    """The digits teachers saved in the workspace, best test accuracy first, and how many files were left out."""
    home = Path(home_dir)
    named = _run_teachers(home)
    teachers, left_out = [], 0
    for path in sorted((home / TEACHER_DIR).glob("*.pt")):
        label, params_json, dataset = named.get(path.resolve(), (path.name, "{}", DatasetSpec(name=LESSON_DATASET)))
        mtime = path.stat().st_mtime
        try:
            arch, test_acc = _file_header(str(path), mtime)
        except (OSError, RuntimeError, KeyError, ValueError):
            arch = ""  # unreadable or not a teacher file
        if dataset.name != LESSON_DATASET or arch not in MODELS:
            left_out += 1
            continue
        teachers.append(TeacherFile(str(path), mtime, arch, params_json, dataset.model_dump_json(), label, test_acc))
    teachers.sort(key=lambda t: -(t.test_acc if t.test_acc is not None else -1.0))
    return teachers, left_out


@st.cache_resource(show_spinner="Loading the digits…", max_entries=4)
def lesson_samples(dataset_json: str) -> LessonSamples:
    """The first test sample of each class, in the split and normalisation the teacher was trained with."""
    return engine_lesson_samples(DatasetSpec.model_validate_json(dataset_json))


@st.cache_data(show_spinner="Running the teacher on ten digits…", max_entries=8)
def teacher_logits(path: str, mtime: float, arch: str, params_json: str, dataset_json: str) -> np.ndarray:
    """One forward pass of the saved teacher over the lesson samples: logits (N, classes)."""
    return engine_teacher_logits(path, arch, json.loads(params_json), DatasetSpec.model_validate_json(dataset_json),
                                 lesson_samples(dataset_json).x)


# ---------------------------------------------------------------- actions
def queue_spec(spec_path: Path, what: str) -> str | None:
    """Queue a shipped spec (validated first) and make sure a worker will pick it up; the run id or None."""
    with user_errors(what):
        spec = load_spec(spec_path)
        problems = validate_spec(spec)
        if problems:
            raise SpecError(problems)
        return submit_run(Path(cached.home()), spec)
    return None


@st.fragment(run_every=WAIT_POLL_S)
def wait_for_teacher(home_dir: str, files_seen: int) -> None:
    """While the demo trains, redraw the page as soon as a new teacher file is saved."""
    if len(list((Path(home_dir) / TEACHER_DIR).glob("*.pt"))) != files_seen:
        st.rerun()


# ---------------------------------------------------------------- lessons
def temperature_lesson(home_dir: str) -> None:
    st.header("Temperature and soft targets")
    st.markdown(
        "A teacher turns its logits *z* into probabilities with softmax(*z* / *T*). At *T* = 1 nearly all the mass "
        "sits on one class; a higher temperature spreads it over the others and shows which wrong classes the "
        "teacher finds similar, the *dark knowledge* a **kd** path passes on through *T*² KL(teacher ‖ student). "
        "The *T*² factor keeps the gradients of the loss comparable across temperatures."
    )
    teachers, left_out = teacher_files(home_dir)
    if not teachers:
        no_teacher(home_dir, left_out)
        return
    labels = {t.path: f"{t.label} · {t.arch}" + (f" · test acc {100 * t.test_acc:.1f} %" if t.test_acc is not None else "")
              for t in teachers}
    path = st.selectbox("Teacher", list(labels), format_func=labels.get, key="learn_teacher",
                        help="Teachers this workspace trained inline on digits (saved under teachers/).")
    teacher = next(t for t in teachers if t.path == path)
    try:
        logits = teacher_logits(teacher.path, teacher.mtime, teacher.arch, teacher.params_json, teacher.dataset_json)
    except (RuntimeError, ValueError, KeyError) as err:
        st.error(f"Cannot run {Path(teacher.path).name} as a {teacher.arch}: {err}")
        return
    samples = lesson_samples(teacher.dataset_json)
    temperature = st.slider("Temperature T", 0.5, 20.0, 4.0, 0.5, key="learn_temperature")
    left, right = st.columns([1, 3])
    with left:
        pick = st.radio("Sample", range(len(samples.labels)), horizontal=True, key="learn_sample",
                        format_func=lambda i: samples.class_names[samples.labels[i]])
        picture = np.kron(samples.images[pick], np.ones((IMAGE_PX // samples.images.shape[1],) * 2))  # square pixels
        st.image(picture, width=IMAGE_PX, clamp=True,
                 caption=f"test sample #{samples.ids[pick]} · true class {samples.class_names[samples.labels[pick]]}")
    true_class = int(samples.labels[pick])
    with right:
        st.plotly_chart(learn_charts.temperature_figure(logits[pick], temperature, true_class, samples.class_names),
                        key="learn_temperature_chart", config=PLOT_CONFIG)
    probs = learn_charts.softened(logits[pick], temperature)
    uniform = np.full_like(probs, 1.0 / len(probs))
    st.caption(
        f"Entropy {learn_charts.entropy(probs):.2f} nats (a uniform guess: {np.log(len(probs)):.2f}). "
        f"An untrained student that guesses uniformly would pay T² KL = "
        f"{learn_charts.kd_loss(probs, uniform, temperature):.2f} on this sample through a kd path at this T."
    )


def no_teacher(home_dir: str, left_out: int) -> None:
    """The empty state: no digits teacher yet, so offer the demo that trains one."""
    others = f" ({left_out} teacher file(s) of other datasets are not shown.)" if left_out else ""
    st.info("No digits teacher in this workspace yet. **Run the demo** trains one (a small CNN, seconds on "
            "a CPU); its soft targets appear here as soon as it is saved." + others, icon=":material/school:")
    if st.button("Run the demo", type="primary", icon=":material/play_arrow:", key="learn_run_demo"):
        st.session_state[DEMO_RUN_KEY] = queue_spec(DEMO_SPEC, "Run the demo")
    run_id = st.session_state.get(DEMO_RUN_KEY)
    if run_id:
        st.success(f"Queued the demo as run {run_id}: the teacher trains first.")
        st.page_link(page_file("live"), label="Follow it on Live", icon=":material/monitoring:")
        wait_for_teacher(home_dir, len(list((Path(home_dir) / TEACHER_DIR).glob("*.pt"))))


def path_lesson() -> None:
    st.header("What a path is")
    st.markdown(
        "A **path** is one distillation signal: a teacher *spot* (a named layer: a feature map, the pooled "
        "embedding, the logits), a student spot, and a *distiller*, the loss comparing the two outputs. PathScope "
        "proposes the natural matches: logits to logits, embedding to embedding, and the deepest stage of each "
        "spatial size to the teacher's stage of that size. Each line is labelled with the suggested distiller; "
        "hover over it for the others that fit."
    )
    preset = st.radio("Input", list(PRESETS), horizontal=True, key="learn_input")
    shape, classes, teacher_default, student_default = PRESETS[preset]
    archs = MODELS.names()
    left, right = st.columns(2)
    # Keyed by the preset, so switching it restores that preset's default pair.
    preset_index = list(PRESETS).index(preset)
    teacher = left.selectbox("Teacher", archs, index=archs.index(teacher_default),
                             key=f"learn_path_teacher_{preset_index}")
    student = right.selectbox("Student", archs, index=archs.index(student_default),
                              key=f"learn_path_student_{preset_index}")
    spots = {}
    for role, arch in (("teacher", teacher), ("student", student)):
        try:
            spots[role] = list_spots(arch, shape, classes)
        except (RuntimeError, ValueError) as err:
            st.error(f"The {role} {arch} cannot take a {'×'.join(map(str, shape))} input: {err}")
            return
    candidates = propose_candidates(spots["teacher"], spots["student"])
    st.plotly_chart(learn_charts.path_figure(teacher, spots["teacher"], student, spots["student"], candidates),
                    key="learn_path_chart", config=PLOT_CONFIG)
    if not candidates:
        st.info(f"No spot of {student} matches one of {teacher} (no equal spatial size, no shared embedding or "
                "logits): pick another pair, or draw a path by hand on Configure.")
        return
    path_ids = learn_charts.candidate_path_ids(candidates, teacher)
    st.dataframe(pd.DataFrame({
        "path": path_ids,
        "teacher spot": [c.teacher_spot.name for c in candidates],
        "student spot": [c.student_spot.name for c in candidates],
        "suggested": [c.distillers[0] for c in candidates],
        "also fits": [", ".join(c.distillers[1:]) for c in candidates],
    }), hide_index=True)


def weighting_lesson() -> None:
    st.header("How weightings differ")
    st.markdown(
        "Two paths pull the student in different directions. Here they are two quadratic losses of two parameters, "
        "seen from the current point θ: each arrow is a step, the negative of a (combined) gradient. Widen the "
        "angle past 90° to make the gradients conflict, and make L₂ steeper to see who dominates."
    )
    left, right = st.columns(2)
    angle = left.slider("Angle between the two gradients (degrees)", 0, 180, 135, 5, key="learn_angle")
    scale = right.slider("L₂ is this many times steeper than L₁", 0.25, 4.0, 2.0, 0.25, key="learn_scale")
    problem = learn_charts.toy_problem(angle, scale)
    grads, losses = problem.gradients(), problem.losses()
    directions = learn_charts.update_directions(grads, losses)
    chart, notes = st.columns([3, 2])
    with chart:
        st.plotly_chart(learn_charts.weighting_figure(problem, directions), key="learn_weighting_chart",
                        config=PLOT_CONFIG)
    with notes:
        for name, line in WEIGHTING_LINES.items():
            st.markdown(f"**{name}**: {line}")
        # Rounded to the shown digits, then +0.0: a rate of -0.0004 (at 180°) would read "-0.000".
        changes = np.round([learn_charts.loss_changes(grads, d) for d in directions.values()], 3) + 0.0
        st.dataframe(pd.DataFrame({"weighting": list(directions), "step length": [np.linalg.norm(d) for d in
                                                                                   directions.values()],
                                   "L₁ change rate": changes[:, 0], "L₂ change rate": changes[:, 1]}),
                     hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                                     ("step length", "L₁ change rate", "L₂ change rate")})
        st.caption("Change rate: how fast each loss moves along the step, −g·d (negative: it goes down).")


def negative_transfer_lesson() -> None:
    st.header("Negative transfer")
    st.markdown(
        "A path *transfers negatively* when it makes the student worse than no path at all. The planted demo "
        "plants one: two small CNN teachers on digits, one trained on permuted labels, both distilled into one "
        "student with the negative-transfer probe on: it measures how much each path's share of a step changes "
        "validation loss. The permuted teacher's paths should be flagged as hurting within the first epochs, "
        "and no other path."
    )
    if st.button("Launch the planted-teacher demo", type="primary", icon=":material/science:",
                 key="learn_planted"):
        st.session_state[PLANTED_RUN_KEY] = queue_spec(PLANTED_SPEC, "Launch the planted-teacher demo")
    run_id = st.session_state.get(PLANTED_RUN_KEY)
    if run_id:
        st.success(f"Queued the planted demo as run {run_id} (two teachers train first, a few minutes on a CPU).")
        st.page_link(page_file("live"), label="Follow it on Live", icon=":material/monitoring:")
        if has_page("negative_transfer"):
            st.page_link(page_file("negative_transfer"), label="See which paths hurt on Negative transfer",
                         icon=":material/warning:")


def main() -> None:
    st.title("Learn")
    st.caption("Distillation concepts, live: a real teacher's soft targets, the paths between two models, "
               "how weightings combine conflicting gradients, and a planted case of negative transfer.")
    home_dir = cached.home()
    temperature_lesson(home_dir)
    st.divider()
    path_lesson()
    st.divider()
    weighting_lesson()
    st.divider()
    negative_transfer_lesson()


with user_errors("Learn"):
    main()
