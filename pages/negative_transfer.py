"""Negative transfer: which paths the probe judged to hurt and why, each verdict's history, the measured effects
and gradient geometry behind them, what the weighting did with the flagged paths, and an ablation that
measures each path's effect on test accuracy."""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import streamlit as st

from app import cached
from app import diagnostics_charts as dc
from app.colors import VERDICT_COLORS, path_color
from app.nav import page_file
from app.queries import spec_summary
from app.widgets import pick_run, picker_runs, restore_archived_link, user_errors
from app.writes import submit_ablation, submit_run
from engine.ablation import DEFAULT_TOLERANCE, GROUP_PREFIX, MISSING, AblationError
from engine.diagnostics.verdicts import SILENCED_SHARE, rule_from
from engine.spec import DiagnosticsSpec, SpecError, load_spec, spec_from_yaml
from engine.store import ACTIVE_STATUSES, RunRow
from engine.validate import check_spec

PLANTED_SPEC = Path(__file__).resolve().parents[1] / "assets" / "configs" / "digits_planted.yaml"
PLOT_CONFIG = {"displaylogo": False}
ABLATION_MESSAGE = "nt_ablation_message"  # (kind, text) left by the ablation button's callback
RETRY_STATES = ("failed", "cancelled", MISSING)
ONLY_VARIANTS_MESSAGE = ("Only ablation runs are listed, and they train without probes, so there are no verdicts to "
                         "show. If the runs they ablate are archived, restore them on Compare; or launch a run with "
                         "diagnostics from Configure.")
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
def verdict_section(details: dict, path_ids: list[str], training: bool) -> None:
    st.subheader("Verdicts")
    st.caption("The probe tries each path's share of the real update on a copy of the student and measures the "
               "change of validation loss it causes (nats per step; > 0 raises it). A path **hurts** when its share "
               "consistently raises validation loss by more than a small fraction of the task's own effect; "
               "**helps** is the mirror case."
               + (" The run is still training: these are the verdicts so far." if training else ""))
    if details and not any("mean_effect" in d for d in details.values()):
        st.caption("This run was measured by an older PathScope: it has no measured effect, and its verdicts rest "
                   "on the cosine score.")
    verdict_table(dc.verdict_frame(details, path_ids))
    explanations(details, path_ids)


def verdict_table(frame: pd.DataFrame) -> None:
    frame = frame.assign(verdict=badges(frame["verdict"]), cosine_verdict=badges(frame["cosine_verdict"]))
    col = st.column_config

    def effect(label: str, help_text: str) -> dict:
        return col.NumberColumn(label, format="%.2e", help=help_text)

    def mean(label: str) -> dict:
        return col.NumberColumn(label, format="%.3f", help="mean over the last probes")

    st.dataframe(frame, hide_index=True, placeholder="—", column_config={
        "verdict": VERDICT_BADGES,
        "confidence": col.NumberColumn("confidence", format="%.2f", help="probability the effect's sign is right"),
        "mean_effect": effect("effect (Δ val loss / step)",
                              "mean over the last probes, in nats; > 0 raises validation loss"),
        "mean_effect_se": effect("effect SE", "its standard error across held-out chunks (mean over the last probes)"),
        "raising": col.TextColumn("raising probes", help="recent probes at which the path's share raised "
                                                         "validation loss"),
        "mean_task_effect": effect("task step's effect", "the task's own share over the same probes, for scale"),
        "first_flag_step": col.NumberColumn("flagged at step", help="the first probe that judged the path to hurt"),
        "silenced_step": col.NumberColumn("silenced at step",
                                          help="the probe at which the weighting had cut the flagged path's weight "
                                               f"below {SILENCED_SHARE:.0%} of its weight when flagged"),
        "recovered_step": col.NumberColumn("recovered at step", help="the probe from which it no longer hurt"),
        "cosine_verdict": col.MultiselectColumn("cosine verdict (earlier detector)", options=list(VERDICT_COLORS),
                                                color=list(VERDICT_COLORS.values()),
                                                help="the verdict of the gradient-cosine score, kept as evidence"),
        "mean_cos_task": mean("cos with task"),
        "mean_cos_val": mean("cos with validation"),
        "probes": col.NumberColumn("probes"),
    })


def explanations(details: dict, path_ids: list[str]) -> None:
    """One line per path saying why it has its verdict, the path's name in its colour."""
    for pid in dc.ordered_paths(list(details), path_ids):
        if details[pid].get("explanation"):
            name = f'<span style="color:{path_color(pid, path_ids)}">{html.escape(pid, quote=False)}</span>'
            st.markdown(f"**{name}** {html.escape(details[pid]['explanation'], quote=False)}", unsafe_allow_html=True)


def cost_caption(metrics: pd.DataFrame, diag: pd.DataFrame) -> None:
    share = dc.probe_share(metrics)
    if share is None:
        return
    every = dc.probe_interval(diag)
    st.caption(f"The probe took {share:.1%} of training step time" + (f" (every {every} steps)." if every else "."))


def history_section(diag: pd.DataFrame, details: dict, path_ids: list[str], run_id: str) -> None:
    st.subheader("Verdict history")
    st.caption("Each probe's verdict, drawn until the next probe; markers show where a path was first flagged, "
               "silenced by the weighting, and where it stopped hurting.")
    show_chart(dc.verdict_history_figure(diag, details, path_ids), key=f"nt-history-{run_id}")


def heatmap_section(diag: pd.DataFrame, path_ids: list[str], run_id: str) -> None:
    st.subheader("Measurements over training")
    st.caption("One row per path, one column per probe; red is the harmful end. Effect: how much the path's share "
               "of a step changed validation loss. Cosines: whether its gradient pulls with the task (blue) or "
               "against it (red), as evidence beside the effect.")
    for measure in dc.HEATMAPS:
        matrix = dc.measure_matrix(diag, measure, path_ids)
        if not matrix.empty:  # a run logs the effect or, from an older PathScope, the lookahead
            show_chart(dc.heatmap_figure(matrix, measure), key=f"nt-{measure}-{run_id}")


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
                                help="An effect within ± this many points counts as neutral. One seed's effect "
                                     "varies between seeds (1 to 3.5 points on digits): a tolerance below that "
                                     "calls seed noise harm; lower it for a large test set")
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
    rule = rule_from(settings or DiagnosticsSpec())
    details = run.result.get("verdict_details") or dc.details_from_metrics(diag, path_ids, rule)
    verdict_section(details, path_ids, run.status in ACTIVE_STATUSES)
    cost_caption(metrics, diag)
    history_section(diag, details, path_ids, run.id)
    heatmap_section(diag, path_ids, run.id)
    weight_section(metrics, dc.flagged_steps(details, path_ids), path_ids, summary["combination"], run.id)
    ablation_section(home, run, len(details))


def only_variants_state() -> None:
    """Every run left in the pickers is an ablation variant: say where the runs they ablate went."""
    st.info(ONLY_VARIANTS_MESSAGE, icon=":material/science:")
    restore_archived_link()


def main() -> None:
    st.title("Negative transfer")
    home = cached.home()
    runs = picker_runs(home)
    # Ablation variants train without diagnostics: listing them would bury the runs they ablate.
    variants = runs["group_id"].fillna("").str.startswith(GROUP_PREFIX)
    if not runs.empty and variants.all():
        only_variants_state()
        return
    run = pick_run(home, runs[~variants], refresh_what="probes")
    if run is not None:
        run_view(home, run)


with user_errors("Negative transfer"):
    main()
