"""Negative transfer: which paths the probe judged to hurt, the gradient geometry behind each verdict,
what the weighting did with the flagged paths, and an ablation that measures each path's real effect."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import cached
from app import diagnostics_charts as dc
from app.colors import VERDICT_COLORS
from app.nav import page_file
from app.queries import spec_summary
from app.widgets import pick_run, user_errors
from app.writes import submit_ablation, submit_run
from engine.ablation import DEFAULT_TOLERANCE, GROUP_PREFIX, MISSING, AblationError
from engine.spec import DiagnosticsSpec, SpecError, load_spec, spec_from_yaml
from engine.store import ACTIVE_STATUSES, RunRow
from engine.validate import check_spec

PLANTED_SPEC = Path(__file__).resolve().parents[1] / "assets" / "configs" / "digits_planted.yaml"
PLOT_CONFIG = {"displaylogo": False}
ABLATION_MESSAGE = "nt_ablation_message"  # (kind, text) left by the ablation button's callback
RETRY_STATES = ("failed", "cancelled", MISSING)
VERDICT_BADGES = st.column_config.MultiselectColumn(
    "verdict", options=list(VERDICT_COLORS), color=list(VERDICT_COLORS.values()))


def show_chart(fig, key: str) -> None:
    st.plotly_chart(fig, key=key, config=PLOT_CONFIG)


def diagnostics_settings(run: RunRow) -> DiagnosticsSpec | None:
    """The run's diagnostics settings; None when its stored spec no longer parses (an older PathScope)."""
    try:
        return spec_from_yaml(run.spec_yaml).diagnostics
    except SpecError:
        return None


def badges(values: pd.Series) -> pd.Series:
    """Verdicts as one-item lists, the form a multiselect column draws as a coloured badge."""
    return values.map(lambda v: [v] if isinstance(v, str) else [])


# ---------------------------------------------------------------- no diagnostics
def run_planted_demo() -> None:
    with user_errors("Planted-defect demo"):
        spec = check_spec(load_spec(PLANTED_SPEC))
        submit_run(Path(cached.home()), spec)  # selects it, so this page shows it next
        st.rerun()


def no_diagnostics(run: RunRow, settings: DiagnosticsSpec | None) -> None:
    if settings is not None and settings.enabled and run.status in ACTIVE_STATUSES:
        every = f"every {settings.every} steps" if settings.every else "at an automatic interval"
        st.info(f"Diagnostics are on for this run: the probe measures every path {every} once the student "
                "starts training. Press Refresh to load them.", icon=":material/hourglass_top:")
        return
    st.info("This run recorded no negative-transfer diagnostics. Turn them on with "
            "`diagnostics: {enabled: true}` in the spec, or tick **Negative-transfer diagnostics** on the "
            "Configure page, then launch the run again.", icon=":material/troubleshoot:")
    st.page_link(page_file("configure"), label="Open Configure", icon=":material/tune:")
    st.markdown("**Demo:** `assets/configs/digits_planted.yaml` distils a good teacher and a label-permuted "
                "one into the same student; the permuted teacher's paths are flagged within the first epochs. "
                "From a shell: `python -m engine submit assets/configs/digits_planted.yaml`.")
    if st.button("Run the planted-defect demo", icon=":material/play_arrow:"):
        run_planted_demo()


# ---------------------------------------------------------------- verdicts and measurements
def verdict_section(details: dict, path_ids: list[str], finished: bool) -> None:
    st.subheader("Verdicts")
    st.caption("A path's score is the mean of the cosines between its gradient and the task gradient on the "
               "same batch and on a validation batch. Over the last probes, a consistently negative score "
               "means **hurts**, a consistently positive one **helps**. Lookahead: the predicted change of "
               "validation loss from the path's share of a step (> 0 raises it)."
               + ("" if finished else " The run is still training: these are the verdicts so far."))
    frame = dc.verdict_frame(details, path_ids)
    frame["verdict"] = badges(frame["verdict"])
    col = st.column_config
    st.dataframe(frame, hide_index=True, placeholder="—", column_config={
        "verdict": VERDICT_BADGES,
        "confidence": col.NumberColumn("confidence", format="%.2f", help="probability the score's sign is right"),
        "first_flag_step": col.NumberColumn("flagged at step", help="the first probe that judged the path to hurt"),
        "probes": col.NumberColumn("probes"),
        "mean_score": col.NumberColumn("score", format="%.3f", help="mean over the last probes"),
        "mean_cos_task": col.NumberColumn("cos with task", format="%.3f", help="mean over the last probes"),
        "mean_cos_val": col.NumberColumn("cos with validation", format="%.3f", help="mean over the last probes"),
        "mean_lookahead": col.NumberColumn("lookahead (Δ val loss)", format="%.2e",
                                           help="mean over the last probes; > 0 raises validation loss"),
    })


def heatmap_section(diag: pd.DataFrame, path_ids: list[str], run_id: str) -> None:
    st.subheader("Gradient geometry over training")
    st.caption("One row per path, one column per probe. Blue: the path pulls with the task; red: against it.")
    for measure in dc.HEATMAPS:
        show_chart(dc.heatmap_figure(dc.measure_matrix(diag, measure, path_ids), measure),
                   key=f"nt-{measure}-{run_id}")


def weight_section(metrics: pd.DataFrame, flagged: dict[str, int], path_ids: list[str], combination: str,
                   run_id: str) -> None:
    st.subheader("What the weighting did with the flagged paths")
    if not flagged:
        st.caption("No path was flagged as hurting.")
        return
    if not metrics["key"].str.startswith(dc.PATH_WEIGHT_PREFIX).any():
        st.caption("This run logged no path weights (its path method folds the paths into shared terms).")
        return
    st.caption(f"The weight ({combination}) on each flagged path's own term; the dashed line marks the probe step "
               "that first flagged it. A weight that stays up means the path kept pulling the student after it "
               "was flagged.")
    show_chart(dc.flagged_weight_figure(metrics, flagged, path_ids), key=f"nt-weights-{run_id}")


# ---------------------------------------------------------------- ablation
def queue_ablation(home: str, run_id: str) -> None:
    """Button callback: runs before the page redraws, so the new group shows at once."""
    try:
        group_id, queued = submit_ablation(home, run_id)
    except AblationError as err:
        st.session_state[ABLATION_MESSAGE] = ("error", str(err))
        return
    st.session_state[ABLATION_MESSAGE] = ("success", f"Queued {queued} runs in group `{group_id}`.")


def ablation_button(home: str, run_id: str, label: str) -> None:
    st.button(label, icon=":material/science:", on_click=queue_ablation, args=(home, run_id))


def ablation_message() -> None:
    """What the last press of the ablation button did, shown once."""
    kind, text = st.session_state.pop(ABLATION_MESSAGE, (None, None))
    if kind == "error":
        st.error(text)
    elif kind == "success":
        st.success(text)


def ablation_table(frame: pd.DataFrame) -> None:
    shown = frame.assign(verdict=badges(frame["verdict"]), measured=badges(frame["measured"]))
    col = st.column_config

    def accuracy(label: str, help_text: str) -> dict:
        return col.NumberColumn(label, format="%.2f", width="small", help=f"test accuracy (%) {help_text}")

    def gain(label: str, help_text: str) -> dict:
        return col.NumberColumn(label, format="%+.2f", width="small", help=help_text)

    st.dataframe(shown, hide_index=True, placeholder="—", column_config={
        "verdict": VERDICT_BADGES,
        "first_flag_step": col.NumberColumn("flagged at", width="small", help="the probe step that first flagged it"),
        "acc_full": accuracy("full %", "of the run with every path"),
        "acc_without": accuracy("without %", "of the run without this path"),
        "effect": gain("effect", "full − without, in points: > 0 the path helps, < 0 it hurts"),
        "acc_only": accuracy("alone %", "of the run with this path only"),
        "acc_no_paths": accuracy("no paths %", "of the student trained alone"),
        "alone_gain": gain("alone gain", "alone − no paths, in points: what the path gives on its own"),
        "measured": col.MultiselectColumn("measured", options=list(VERDICT_COLORS),
                                          color=list(VERDICT_COLORS.values()),
                                          help="the effect as a verdict; within ± the tolerance it is neutral"),
        "agrees": col.CheckboxColumn("agrees", width="small", help="the probe's verdict matches the measured one"),
        "status": col.TextColumn("status", width="small",
                                 help="pending: an ablation run this row needs is queued or running"),
    })


def ablation_section(home: str, run: RunRow, n_paths: int) -> None:
    st.subheader("Ablation: does removing a path change accuracy?")
    st.caption(f"Trains {2 * n_paths + 1} runs of the same spec and seed without diagnostics: without each path, "
               "each path alone, and no paths (the student alone). A path that hurts should raise test accuracy "
               "when it is removed.")
    tolerance = st.number_input("Tolerance (accuracy points)", min_value=0.0, value=DEFAULT_TOLERANCE, step=0.25,
                                key=f"nt-tolerance-{run.id}",
                                help="An effect within ± this many points counts as neutral")
    ablation_message()
    state = cached.ablation(home, run.id, float(tolerance))
    if state is None:
        ablation_button(home, run.id, "Run ablation")
        return
    rows, done, total = state
    st.progress(done / total, text=f"{done} / {total} ablation runs done")
    if any(row.status in RETRY_STATES for row in rows):
        ablation_button(home, run.id, "Queue the failed ablation runs again")
    frame = dc.ablation_frame(rows)
    ablation_table(frame)
    if frame["effect"].notna().any():
        show_chart(dc.ablation_effect_figure(frame, float(tolerance)), key=f"nt-ablation-{run.id}")


# ---------------------------------------------------------------- page
def run_view(home: str, run: RunRow) -> None:
    metrics = cached.metrics(home, run.id)
    settings = diagnostics_settings(run)
    if not dc.has_diagnostics(metrics):
        no_diagnostics(run, settings)
        return
    summary = spec_summary(run.spec_yaml)
    path_ids = summary["path_ids"]
    diag = dc.diag_frame(metrics)
    window = settings.window if settings is not None else DiagnosticsSpec().window
    details = run.result.get("verdict_details") or dc.details_from_metrics(diag, path_ids, window)
    verdict_section(details, path_ids, "verdict_details" in run.result)
    heatmap_section(diag, path_ids, run.id)
    weight_section(metrics, dc.flagged_steps(details, path_ids), path_ids, summary["combination"], run.id)
    ablation_section(home, run, len(details))


def main() -> None:
    st.title("Negative transfer")
    home = cached.home()
    runs = cached.runs(home)
    # Ablation variants train without diagnostics: listing them would bury the runs they ablate.
    runs = runs[~runs["group_id"].fillna("").str.startswith(GROUP_PREFIX)]
    run = pick_run(home, runs, refresh_what="probes")
    if run is not None:
        run_view(home, run)


with user_errors("Negative transfer"):
    main()
