"""Compare: every run in one table (search, filters, tags, notes, archive, delete: app/run_table.py), final
accuracy grouped by combination (path method · weighting), one metric overlaid over the selected runs, CSV export.
The view (filters, group, selected runs) is kept in the URL, so its link opens the same view."""
import pandas as pd
import streamlit as st

from functools import partial

from app import cached, charts, links, run_table, sweep_view
from app.report import selection_text
from app.queries import combination_summary, metrics_csv
from app.widgets import download_student, smoothing_picker, user_errors
from engine.vocabulary import TEST_ACC, TOTAL_LOSS, VAL_ACC

PREFIX = "cmp"
DEFAULT_OVERLAY = 3
PREFERRED_METRICS = (VAL_ACC, TEST_ACC, TOTAL_LOSS)
ALL_RUNS = "(all runs)"


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
    """The table's first finished runs (the newest, in its default order), or its first runs when none finished."""
    done = runs[runs["status"] == "done"]
    return list((done if not done.empty else runs)["id"].head(DEFAULT_OVERLAY))


def pick_metric(keys: list[str]) -> str:
    preferred = next((k for k in PREFERRED_METRICS if k in keys), keys[0])
    return st.selectbox("Metric", keys, index=keys.index(preferred),
                        format_func=lambda key: f"{charts.metric_title(key)} ({key})")


def overlay(home: str, runs: pd.DataFrame, selected: list[str]) -> None:
    st.subheader("Overlay a metric")
    if not selected:
        st.info("Select runs under *Runs to compare* above to overlay their curves.")
        return
    keys = cached.metric_keys(home, tuple(selected))
    if not keys:
        st.info("The selected runs have no metrics yet: wait for them to start, or pick finished runs.")
        return
    key = pick_metric(keys)
    smoothing = 0 if key in charts.EPOCH_KEYS else smoothing_picker("cmp_smoothing")
    labels = dict(zip(runs["id"], runs["label"]))
    series = cached.metric_of_runs(home, tuple(selected), key)  # only the charted key: a long run logs millions
    fig = charts.overlay_figure(series, key, {run_id: labels[run_id] for run_id in selected}, smoothing)
    st.plotly_chart(fig, config={"displaylogo": False})
    st.download_button(
        "Download metrics (CSV)", partial(metrics_csv, home, selected), file_name="pathscope-metrics.csv",
        mime="text/csv", icon=":material/download:", on_click="ignore",
        help="All phases and keys of the selected runs, long format: run_id, phase, step, epoch, key, value",
    )


def groups_newest_first(runs: pd.DataFrame) -> list[str]:
    """Group ids ordered by their newest run, whatever order the table is sorted in."""
    return list(dict.fromkeys(runs.sort_values("created_at", ascending=False)["group_id"].dropna()))


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


def pick_group(groups: list[str]) -> str:
    """The group shown: the link's ?group=, else the last pick, else the newest; written back to the link."""
    options = [*groups, ALL_RUNS]
    state = st.session_state
    if "cmp_group" not in state:  # first draw in this session: the link decides
        state["cmp_group"] = links.linked_choice(links.GROUP, set(groups), "group", "the newest group") or options[0]
    elif state["cmp_group"] not in options:  # the filters hide the group picked before
        state["cmp_group"] = options[0]
    group = st.selectbox("Group", options, key="cmp_group",
                         help="Comparisons launched from Configure share a group; the newest is shown first")
    links.write(links.GROUP, None if group == ALL_RUNS else group)
    return group


def group_view(home: str, runs: pd.DataFrame) -> tuple[str, list[str]]:
    """Final test accuracy per combination over one comparison group (or any runs picked); returns the group
    shown and the runs in the view."""
    st.subheader("Group by combination")
    groups = groups_newest_first(runs)
    group = pick_group(groups)
    members = runs if group == ALL_RUNS else runs[runs["group_id"] == group]
    if group != ALL_RUNS:
        run_table.group_annotations(home, group, PREFIX)
    labels = dict(zip(runs["id"], runs["label"]))
    chosen = st.multiselect("Runs in the view", list(members["id"]), default=list(members["id"]),
                            key=f"cmp_group_runs-{group}", format_func=lambda run_id: labels.get(run_id, run_id))
    selected = runs[runs["id"].isin(chosen)]
    if not chosen:
        st.info("Select runs above to compare their final accuracy by combination.")
        return group, chosen
    if not groups:
        st.caption("No comparison groups among these runs: launch one from Configure (Launch a comparison). "
                   "Until then every run listed is shown, whatever its setup.")
    summary = combination_summary(selected)
    if summary.empty or not summary["finished"].any():
        st.info("None of these runs has finished yet: the accuracies appear here as they do.")
        return group, chosen
    summary_table(summary)
    finished = selected[(selected["status"] == "done") & selected["test_acc_pct"].notna()]
    st.plotly_chart(charts.combination_accuracy_figure(finished, summary[summary["finished"] > 0]),
                    key="cmp_group_chart", config={"displaylogo": False})
    return group, chosen


def report_downloads(home: str, group: str, in_view: list[str], figures: list) -> None:
    """The runs in view (exactly those: a filter or the archive can hide some of a group's runs) as a
    self-contained HTML report, charts interactive and working offline, and a Markdown summary. Built only on a
    click: a report inlines plotly.js (about 5 MB)."""
    if not in_view:
        return
    name = f"pathscope-{group}" if group != ALL_RUNS else f"pathscope-{len(in_view)}-runs"
    build = partial(selection_text, home, in_view)
    left, right = st.columns(2)
    left.download_button("Report of this view (HTML)", partial(build, "html", extra_figures=figures),
                         file_name=f"{name}.html", mime="text/html", on_click="ignore",
                         icon=":material/download:", help="Self-contained: its charts work offline")
    right.download_button("Summary (Markdown)", partial(build, "markdown"), file_name=f"{name}.md",
                          mime="text/markdown", on_click="ignore", icon=":material/download:")


def main() -> None:
    st.title("Compare")
    home = cached.home()
    run_table.show_feedback(PREFIX)
    runs = run_table.table_section(home, PREFIX)
    if runs is None:
        return
    selected = run_table.selection(PREFIX, runs, default_selection(runs))
    run_table.actions(home, runs[runs["id"].isin(selected)], PREFIX)
    student_downloads(home, runs)
    group, in_view = group_view(home, runs)
    figures = sweep_view.sweep_section(home, runs[runs["id"].isin(in_view)])
    report_downloads(home, group, in_view, figures)
    overlay(home, runs, selected)


with user_errors("Compare"):
    main()
