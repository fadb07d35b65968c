"""Compare: every run in one table, final accuracy grouped by combination (path method · weighting), one metric
overlaid, CSV export."""
import pandas as pd
import streamlit as st

from app import cached, charts
from app.queries import combination_summary
from app.widgets import download_student, empty_state, smoothing_picker, user_errors
from engine.vocabulary import MAIN_PHASE, TEST_ACC, TOTAL_LOSS, VAL_ACC

DEFAULT_OVERLAY = 3
PREFERRED_METRICS = (VAL_ACC, TEST_ACC, TOTAL_LOSS)
TABLE_COLUMNS = ["name", "id", "status", "dataset", "student", "combination", "n_paths",
                 "test_acc_pct", "val_acc_pct", "duration_s", "runs_on"]
ALL_RUNS = "(all runs)"


def runs_table(runs: pd.DataFrame) -> None:
    st.dataframe(
        runs[TABLE_COLUMNS],
        hide_index=True,
        column_config={
            "n_paths": st.column_config.NumberColumn("paths", help="enabled distillation paths"),
            "test_acc_pct": st.column_config.NumberColumn("test acc (%)", format="%.2f"),
            "val_acc_pct": st.column_config.NumberColumn("val acc (%)", format="%.2f"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
            "runs_on": st.column_config.TextColumn("runs on", help="executor · node · devices"),
        },
    )


def student_downloads(home: str, runs: pd.DataFrame) -> None:
    """*Download student* for any finished run of the table."""
    done = runs[runs["status"] == "done"]
    if done.empty:
        return
    labels = dict(zip(done["id"], done["label"]))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    run_id = left.selectbox("Take a distilled student home", list(done["id"]), key="cmp_student",
                            format_func=lambda r: labels.get(r, r))
    run = cached.run(home, run_id)
    if run is not None:
        with right:
            download_student(home, run, key=f"cmp-download-{run_id}")


def default_selection(runs: pd.DataFrame) -> list[str]:
    """The newest finished runs, or the newest runs of any status when none finished."""
    done = runs[runs["status"] == "done"]
    return list((done if not done.empty else runs)["id"].head(DEFAULT_OVERLAY))


def pick_metric(keys: list[str]) -> str:
    preferred = next((k for k in PREFERRED_METRICS if k in keys), keys[0])
    return st.selectbox("Metric", keys, index=keys.index(preferred))


def overlay(home: str, runs: pd.DataFrame, selected: list[str]) -> None:
    metrics = cached.metrics_of_runs(home, tuple(selected))
    own = metrics[metrics["phase"] == MAIN_PHASE]
    if own.empty:
        st.info("The selected runs have no metrics yet: wait for them to start, or pick finished runs.")
        return
    key = pick_metric(sorted(own["key"].unique()))
    smoothing = 0 if key in charts.EPOCH_KEYS else smoothing_picker("cmp_smoothing")
    labels = dict(zip(runs["id"], runs["label"]))
    fig = charts.overlay_figure(own, key, {run_id: labels[run_id] for run_id in selected}, smoothing)
    st.plotly_chart(fig, config={"displaylogo": False})
    st.download_button(
        "Download metrics (CSV)", metrics.to_csv(index=False), file_name="pathscope-metrics.csv",
        mime="text/csv", icon=":material/download:", on_click="ignore",
        help="All phases and keys of the selected runs, long format: run_id, phase, step, epoch, key, value",
    )


def groups_newest_first(runs: pd.DataFrame) -> list[str]:
    """Group ids ordered by their newest run (runs come newest first)."""
    return list(dict.fromkeys(runs["group_id"].dropna()))


def summary_table(summary: pd.DataFrame) -> None:
    st.dataframe(
        summary, hide_index=True,
        column_config={
            "finished": st.column_config.NumberColumn("finished runs", help="done, with a test accuracy"),
            "pending": st.column_config.NumberColumn("pending", help="queued or running"),
            "mean": st.column_config.NumberColumn("mean test acc (%)", format="%.2f"),
            "std": st.column_config.NumberColumn("std (%)", format="%.2f",
                                                 help="sample standard deviation (n − 1); empty for one run"),
            "min": st.column_config.NumberColumn("min (%)", format="%.2f"),
            "max": st.column_config.NumberColumn("max (%)", format="%.2f"),
        },
    )


def group_view(runs: pd.DataFrame) -> None:
    """Final test accuracy per combination over one comparison group (or any runs picked)."""
    st.subheader("Group by combination")
    groups = groups_newest_first(runs)
    group = st.selectbox("Group", [*groups, ALL_RUNS], key="cmp_group",
                         help="Comparisons launched from Configure share a group; the newest is shown first")
    members = runs if group == ALL_RUNS else runs[runs["group_id"] == group]
    labels = dict(zip(runs["id"], runs["label"]))
    chosen = st.multiselect("Runs in the view", list(members["id"]), default=list(members["id"]),
                            key=f"cmp_group_runs-{group}", format_func=lambda run_id: labels.get(run_id, run_id))
    selected = runs[runs["id"].isin(chosen)]
    if not chosen:
        st.info("Select runs above to compare their final accuracy by combination.")
        return
    if not groups:
        st.caption("No comparison groups yet: launch one from Configure (Launch a comparison). "
                   "Until then every run is shown, whatever its setup.")
    summary = combination_summary(selected)
    if summary.empty or not summary["finished"].any():
        st.info("None of these runs has finished yet: the accuracies appear here as they do.")
        return
    summary_table(summary)
    finished = selected[(selected["status"] == "done") & selected["test_acc_pct"].notna()]
    st.plotly_chart(charts.combination_accuracy_figure(finished, summary[summary["finished"] > 0]),
                    key="cmp_group_chart", config={"displaylogo": False})


def main() -> None:
    st.title("Compare")
    home = cached.home()
    runs = cached.runs(home)
    if runs.empty:
        empty_state()
        return
    runs_table(runs)
    student_downloads(home, runs)
    group_view(runs)
    st.subheader("Overlay a metric")
    labels = dict(zip(runs["id"], runs["label"]))
    selected = st.multiselect("Runs to overlay", list(runs["id"]), default=default_selection(runs),
                              format_func=lambda run_id: labels.get(run_id, run_id))
    if not selected:
        st.info("Select one or more runs above to overlay their curves.")
        return
    overlay(home, runs, selected)


with user_errors("Compare"):
    main()
