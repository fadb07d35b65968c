"""What a report says about a run or a comparison group, gathered from the store once for both formats.

A ``Report`` is plain data: facts (label, value), tables of already formatted strings, (title, figure)
pairs and the spec text. ``app.report_html`` and ``app.report_markdown`` only lay it out (and escape
it), so the two formats always carry the same numbers. Figures come from the dashboard's own chart
builders, so a path has the colour it has on the pages.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import pandas as pd
import plotly.graph_objects as go
import yaml

from app import charts, queries
from app import diagnostics_charts as dc
from app.run_series import Series, display_series, long_frame
from engine.diagnostics.verdicts import rule_from
from engine.spec import DiagnosticsSpec, SpecError, migrate_spec_data, parse_spec, printable, spec_to_yaml
from engine.store import RunRow, Store
from engine.vocabulary import ACC_KEYS, ACC_PREFIX, DIAG_PREFIX, MAIN_PHASE, PATH_WEIGHT_PREFIX, TEST_ACC, VAL_ACC

#: (title, figure): what ``extra_figures`` takes and ``Report.figures`` holds
Figure = tuple[str, go.Figure]
MISSING = "—"  # a cell with no value (not measured, not finished)
SPLITS = tuple(key[len(ACC_PREFIX):] for key in ACC_KEYS)


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Report:
    kind: Literal["run", "group"]
    target_id: str
    title: str
    facts: tuple[tuple[str, str], ...]
    tables: tuple[Table, ...]
    figures: tuple[Figure, ...]
    spec_yaml: str | None = None  # runs only
    tags: tuple[str, ...] = ()
    note: str = ""
    generated_at: float = field(default_factory=time.time)


# ---------------------------------------------------------------- formatting
def percent(fraction: Any) -> str:
    """A stored accuracy (a fraction) as a percentage with two decimals; ``MISSING`` when absent or not finite."""
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        return MISSING
    return f"{100.0 * fraction:.2f}"


def number(value: Any, digits: int = 4) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


# ---------------------------------------------------------------- a run's spec, read leniently
@dataclass(frozen=True)
class SpecView:
    """The parts of a stored spec a report shows. An older run's spec may no longer validate: it is still
    reported, from its plain (migrated) data, and shown as stored."""

    data: dict[str, Any]
    text: str  # version-2 YAML when the spec validates, else the stored text
    diagnostics: DiagnosticsSpec

    def items(self, name: str) -> list[dict[str, Any]]:
        value = self.data.get(name)
        return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}


def spec_view(spec_yaml: str) -> SpecView:
    try:
        data = yaml.safe_load(spec_yaml)
    except yaml.YAMLError:
        data = None
    data = migrate_spec_data(data) if isinstance(data, dict) else {}
    try:
        spec = parse_spec(data)
    except SpecError:
        return SpecView(data, spec_yaml, DiagnosticsSpec())
    return SpecView(data, spec_to_yaml(spec), spec.diagnostics)


def teachers_to_student(view: SpecView) -> str:
    teachers = ", ".join(f"{printable(str(t.get('id', '?')))}: {printable(str(t.get('arch', '?')))}"
                         for t in view.items("teachers"))
    student = printable(str(view.section("student").get("arch", "?")))
    return f"{teachers or '(no teacher)'} → {student}"


# ---------------------------------------------------------------- run report
def accuracy_table(metrics: pd.DataFrame, result: dict[str, Any]) -> Table:
    """Per split: the accuracy at the last epoch, the best epoch's and which epoch that was (epochs count from 0,
    as on the charts); then the final evaluation the run's result holds."""
    rows = []
    for split in SPLITS:
        series = metrics[metrics["key"] == f"{ACC_PREFIX}{split}"].dropna(subset=["value"]).sort_values("epoch")
        if series.empty:
            continue
        best = series.loc[series["value"].idxmax()]
        rows.append((split, percent(series["value"].iloc[-1]), percent(best["value"]), str(int(best["epoch"]))))
    for key in ("test_acc", "val_acc"):
        if key in result:
            rows.append((f"{key.split('_')[0]} (end of run)", percent(result[key]), MISSING, MISSING))
    return Table("Accuracy", ("split", "final (%)", "best (%)", "best epoch"), tuple(rows),
                 "" if rows else "No accuracy was recorded yet.")


def main_metrics(store: Store, run_id: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """The main phase's metrics as the Live page draws them, and the last logged value of every key.

    Series are read as numpy arrays and cut down before any DataFrame is built (a long run logs over a million
    rows); the probe's series stay whole, since verdicts are replayed from every probe.
    """
    arrays, _ = queries.metric_series_since(store, run_id, 0)
    series = {key: Series(*columns).finite() for (phase, key), columns in arrays.items() if phase == MAIN_PHASE}
    probes = {key: s for key, s in series.items() if key.startswith(DIAG_PREFIX)}
    shown = display_series({key: s for key, s in series.items() if key not in probes})
    last = {key: float(s.value[-1]) for key, s in series.items() if len(s.value)}
    return long_frame(MAIN_PHASE, {**shown, **probes}), last


def verdict_details(run: RunRow, metrics: pd.DataFrame, view: SpecView, path_ids: list[str]) -> dict[str, dict]:
    """The stored verdicts of a finished run, or those the Negative transfer page rebuilds from the logged probes."""
    stored = run.result.get("verdict_details")
    if isinstance(stored, dict) and stored:
        return stored
    if not dc.has_diagnostics(metrics):
        return {}
    return dc.details_from_metrics(dc.diag_frame(metrics), path_ids, rule_from(view.diagnostics))


def path_table(view: SpecView, last: dict[str, float], details: dict[str, dict]) -> Table:
    weights = {key[len(PATH_WEIGHT_PREFIX):]: v for key, v in last.items() if key.startswith(PATH_WEIGHT_PREFIX)}
    rows = []
    for path in view.items("paths"):
        pid = str(path.get("id", "?"))
        verdict = details.get(pid, {})
        # the weighting's last weight; else the spec's fixed one; else the distiller's conventional weight
        logged = weights.get(pid, path.get("weight"))
        weight = "conventional" if logged is None else number(logged)
        rows.append((
            printable(pid), printable(str(path.get("teacher", "?"))), printable(str(path.get("distiller", "?"))),
            f"{printable(str(path.get('teacher_spot', '?')))} → {printable(str(path.get('student_spot', '?')))}",
            weight if path.get("enabled", True) else "disabled",
            str(verdict.get("verdict") or MISSING), printable(str(verdict.get("explanation") or "")),
        ))
    caption = "" if details else "This run recorded no negative-transfer diagnostics: no verdicts."
    return Table("Paths", ("path", "teacher", "distiller", "layers (teacher → student)", "final weight",
                           "verdict", "why"), tuple(rows), caption)


def run_figures(metrics: pd.DataFrame, details: dict[str, dict], path_ids: list[str]) -> list[Figure]:
    keys = metrics["key"]
    figures: list[Figure] = []
    if keys.isin(ACC_KEYS).any():
        figures.append(("Accuracy per epoch", charts.accuracy_figure(metrics)))
    if keys.str.startswith(charts.LOSS_PREFIX).any():
        figures.append(("Training loss per term", charts.loss_figure(metrics, path_ids)))
    if keys.str.startswith(charts.WEIGHT_PREFIX).any():
        figures.append(("Weight of each term", charts.weight_figure(metrics, path_ids)))
    if keys.str.startswith(charts.WEIGHTED_TERM_PREFIX).any():
        figures.append(("What each term adds to the total loss", charts.weighted_loss_figure(metrics, path_ids)))
    if dc.has_diagnostics(metrics):
        figures.append(("Negative-transfer verdicts over training",
                        dc.verdict_history_figure(dc.diag_frame(metrics), details, path_ids)))
    return figures


def run_facts(run: RunRow, view: SpecView) -> tuple[tuple[str, str], ...]:
    summary = queries.spec_summary(run.spec_yaml)
    dataset = printable(str(summary["dataset"]))
    return (
        ("name", printable(run.name)), ("id", run.id), ("status", run.status),
        ("group", printable(run.group_id) if run.group_id else MISSING),
        ("dataset", dataset), ("teachers → student", teachers_to_student(view)),
        ("weighting / method", printable(str(summary["combination"]))),
        ("seed", str(view.data.get("seed", MISSING))), ("epochs", str(view.data.get("epochs", MISSING))),
        ("placement", queries.placement_label(run) or MISSING), ("duration", duration(queries.run_duration(run))),
        ("created", timestamp(run.created_at)), *((("error", printable(run.error)),) if run.error else ()),
    )


def run_report(store: Store, run: RunRow, tags: Sequence[str] = (), note: str = "") -> Report:
    view = spec_view(run.spec_yaml)
    path_ids = [str(p.get("id")) for p in view.items("paths")]
    metrics, last = main_metrics(store, run.id)
    details = verdict_details(run, metrics, view, path_ids)
    tables = (accuracy_table(metrics, run.result), path_table(view, last, details))
    return Report("run", run.id, f"Run {printable(run.name)}", run_facts(run, view), tables,
                  tuple(run_figures(metrics, details, path_ids)), view.text, tuple(tags), note)


# ---------------------------------------------------------------- group report
def best_accuracy(metrics: pd.DataFrame, run_id: str) -> str:
    """The run's best per-epoch validation accuracy (test when it logged no validation)."""
    own = metrics[metrics["run_id"] == run_id].dropna(subset=["value"])
    for key in (VAL_ACC, TEST_ACC):
        values = own.loc[own["key"] == key, "value"]
        if not values.empty:
            return percent(values.max())
    return MISSING


def flagged_paths(run: RunRow) -> str:
    """The paths the run's negative-transfer detector flagged as hurting at some step, whatever their final verdict
    (lookahead silences a path it caught); "none", or MISSING when the run stored no verdicts (unfinished, or run
    without diagnostics)."""
    details = run.result.get("verdict_details")
    if not isinstance(details, dict) or not details:
        return MISSING
    flagged = [printable(str(pid)) for pid, summary in details.items()
               if isinstance(summary, dict) and summary.get("first_flagged_step") is not None]
    return ", ".join(flagged) or "none"


def runs_table(runs: pd.DataFrame, metrics: pd.DataFrame, flagged: dict[str, str]) -> Table:
    """One row per run; ``flagged``: each run's ``flagged_paths``."""
    rows = tuple((
        str(r.name), str(r.id), str(r.status), printable(str(r.combination)), printable(str(r.dataset)),
        printable(str(r.student)), _pct_cell(r.test_acc_pct), best_accuracy(metrics, r.id), duration(r.duration_s),
        flagged.get(r.id, MISSING),
    ) for r in runs.itertuples(index=False))
    return Table("Runs", ("name", "id", "status", "weighting / method", "dataset", "student", "final test acc (%)",
                          "best val acc (%)", "duration", "flagged as hurting"), rows,
                 "flagged as hurting: the paths the negative-transfer detector flagged at some step of the run "
                 f"({MISSING}: the run stored no verdicts).")


def _pct_cell(value: Any) -> str:
    return MISSING if pd.isna(value) else f"{float(value):.2f}"


def summary_table(summary: pd.DataFrame) -> Table:
    """``queries.combination_summary`` as text: mean ± sample std of the final test accuracy per combination."""
    def spread(row: Any) -> str:
        if pd.isna(row.mean):
            return MISSING
        return f"{row.mean:.2f} ± {row.std:.2f}" if not pd.isna(row.std) else f"{row.mean:.2f} (one run)"

    rows = tuple((printable(str(r.combination)), str(r.finished), str(r.pending), spread(r), _pct_cell(r.min),
                  _pct_cell(r.max)) for r in summary.itertuples(index=False))
    return Table("Final test accuracy per combination", ("weighting / method", "finished", "pending",
                                                         "mean ± std (%)", "min (%)", "max (%)"), rows,
                 "std is the sample standard deviation (n − 1) over the finished runs; pending: queued or running.")


def group_figures(runs: pd.DataFrame, metrics: pd.DataFrame, summary: pd.DataFrame) -> list[Figure]:
    labels = dict(zip(runs["id"], runs["label"]))
    figures: list[Figure] = [(f"{title} per epoch, every run", charts.overlay_figure(metrics, key, labels))
                             for key, title in ((VAL_ACC, "Validation accuracy"), (TEST_ACC, "Test accuracy"))
                             if (metrics["key"] == key).any()]
    finished = runs[(runs["status"] == "done") & runs["test_acc_pct"].notna()]
    if not finished.empty:
        figures.append(("Final test accuracy by combination",
                        charts.combination_accuracy_figure(finished, summary[summary["finished"] > 0])))
    return figures


def accuracy_metrics(store: Store, run_ids: list[str]) -> pd.DataFrame:
    """The runs' per-epoch accuracies (long format with run_id), read by key: a run's per-step rows are not read."""
    records = [(run_id, *row) for run_id in run_ids for row in store.metrics(run_id, keys=ACC_KEYS, phase=MAIN_PHASE)]
    return pd.DataFrame.from_records(records, columns=["run_id", *queries.METRIC_COLUMNS])


def group_report(store: Store, group_id: str | None, rows: list[RunRow], tags: Sequence[str] = (), note: str = "",
                 extra_figures: Sequence[Figure] = ()) -> Report:
    """A comparison of ``rows``: the runs of group ``group_id``, or (None) runs picked one by one on Compare.
    ``extra_figures``: (title, figure) pairs drawn after the comparison's own charts (the sweep analysis)."""
    runs = pd.DataFrame.from_records([queries.run_record(run) for run in rows], columns=queries.RUN_COLUMNS)
    metrics = accuracy_metrics(store, [run.id for run in rows])
    summary = queries.combination_summary(runs)
    statuses = runs["status"].value_counts()
    facts = (("group", printable(group_id) if group_id else MISSING), ("runs", str(len(runs))),
             ("statuses", ", ".join(f"{n} {status}" for status, n in statuses.items())),
             ("datasets", ", ".join(sorted(set(runs["dataset"].astype(str))))),
             ("first created", timestamp(min(r.created_at for r in rows))),
             ("last created", timestamp(max(r.created_at for r in rows))))
    title = f"Group {printable(group_id)}" if group_id else f"Comparison of {len(rows)} runs"
    flagged = {run.id: flagged_paths(run) for run in rows}
    return Report("group", group_id or "", title, facts, (runs_table(runs, metrics, flagged), summary_table(summary)),
                  (*group_figures(runs, metrics, summary), *extra_figures), None, tuple(tags), note)
