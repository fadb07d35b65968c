"""Tables and chart builders for the Negative transfer page; pure functions, no Streamlit.

Inputs are a run's metrics in the store's long format (phase, step, epoch, key, value) holding
the probe's "diag/<measure>:<subject>" series, the verdict details the engine stores in a
finished run's result, and ``engine.ablation`` rows. Paths are listed in the spec's order and
coloured by ``colors.path_color``; verdicts by ``colors.verdict_color``. In every signed chart
red is the harmful end.

A run still training has no stored details: they are rebuilt by replaying its logged probe
series through the engine's own ``verdicts.update``, so live and finished runs get the same
verdicts, history and explanations. Runs of an older PathScope logged no measured effect (they
logged "lookahead"); for them only the logged verdicts are read.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.charts import PATH_WEIGHT_PREFIX, base_figure, minmax_indices
from app.colors import DIVERGING_SCALE, path_color, verdict_color
from engine.ablation import AblationRow
from engine.diagnostics.verdicts import PathEvidence, VerdictRule, update
from engine.vocabulary import (
    DIAG_PREFIX, HELPS, HURTS, MAIN_PHASE, NEUTRAL, TASK, TIME_SECTIONS, VERDICT_CODE, VERDICT_OF_CODE, time_key,
)

VERDICTS = (HURTS, NEUTRAL, HELPS)
VERDICT_COLUMNS = ["path", "verdict", "confidence", "mean_effect", "mean_effect_se", "raising", "mean_task_effect",
                   "first_flag_step", "silenced_step", "recovered_step", "cosine_verdict", "mean_cos_task",
                   "mean_cos_val", "probes"]
STEP_COLUMNS = ["first_flag_step", "silenced_step", "recovered_step"]
NON_PATH_SUBJECTS = (TASK, "val")  # the probe's own subjects: the task's effect and norm, the validation norm
REPLAYED = ("effect", "effect_se", "weight", "cos_val", "cos_task")  # per path, what verdicts.update reads
#: details key -> (legend name, marker symbol) of the moments the history chart marks
EVENTS = {"first_flagged_step": ("first flagged", "triangle-down"), "silenced_step": ("silenced", "square"),
          "recovered_step": ("recovered", "circle")}
EVENT_COLOR = "#1F1F1F"
SEGMENT_WIDTH = 16  # px: a verdict row reads as a band


@dataclasses.dataclass(frozen=True)
class Heatmap:
    title: str
    colorbar: str
    value_format: str
    harmful_high: bool  # True when a positive value is the harmful end (reverses the colours)
    fixed_range: tuple[float, float] | None  # cosines share one scale across runs


# The page draws those a run logged: "lookahead" only exists in runs of an older PathScope.
HEATMAPS: dict[str, Heatmap] = {
    "effect": Heatmap("Measured effect: change of validation loss from each path's share of a step",
                      "Δ val loss<br>(nats)", ".2e", True, None),
    "cos_task": Heatmap("Cosine between each path's gradient and the task gradient (same batch)",
                        "cosine", ".3f", False, (-1.0, 1.0)),
    "cos_val": Heatmap("Cosine between each path's gradient and the validation gradient",
                       "cosine", ".3f", False, (-1.0, 1.0)),
    "lookahead": Heatmap("Lookahead (older PathScope): predicted change of validation loss from each path's share",
                         "Δ val loss<br>(nats)", ".2e", True, None),
}


# ---------------------------------------------------------------- reading the probe's series
def diag_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """The main phase's probe measurements as (measure, path, step, value) rows."""
    rows = metrics[(metrics["phase"] == MAIN_PHASE) & metrics["key"].str.startswith(DIAG_PREFIX)]
    measure_path = rows["key"].str[len(DIAG_PREFIX):].str.split(":", n=1, expand=True)
    if measure_path.empty:
        return pd.DataFrame(columns=["measure", "path", "step", "value"])
    return pd.DataFrame({"measure": measure_path[0], "path": measure_path[1],
                         "step": rows["step"].astype(int), "value": rows["value"].astype(float)})


def has_diagnostics(metrics: pd.DataFrame) -> bool:
    return bool(((metrics["phase"] == MAIN_PHASE) & metrics["key"].str.startswith(DIAG_PREFIX)).any())


def measured_effect(diag: pd.DataFrame) -> bool:
    """Whether the run logged the measured effect (older PathScope versions logged a lookahead instead)."""
    return bool((diag["measure"] == "effect").any())


def ordered_paths(found: list[str], path_ids: list[str]) -> list[str]:
    """Paths in spec order, then any the spec does not list (a spec edited after logging)."""
    return [p for p in path_ids if p in found] + sorted(set(found) - set(path_ids))


def measure_matrix(diag: pd.DataFrame, measure: str, path_ids: list[str]) -> pd.DataFrame:
    """Paths (rows, spec order) x probe steps (columns) of one measure; NaN where a path was not probed."""
    rows = diag[(diag["measure"] == measure) & ~diag["path"].isin(NON_PATH_SUBJECTS)]
    table = rows.pivot_table(index="path", columns="step", values="value", aggfunc="last")
    return table.reindex(ordered_paths(list(table.index), path_ids))


def probe_interval(diag: pd.DataFrame) -> int | None:
    """Steps between probes, read from the logged probe steps; None with fewer than two probes."""
    steps = np.unique(diag.loc[diag["measure"] == "verdict", "step"].to_numpy())
    return int(np.median(np.diff(steps))) if len(steps) > 1 else None


def probe_share(metrics: pd.DataFrame) -> float | None:
    """The probe's share of the main phase's step time (time/diagnostics over all time sections); None if untimed."""
    main = metrics[metrics["phase"] == MAIN_PHASE]
    times = main[main["key"].isin([time_key(s) for s in TIME_SECTIONS])]
    total = float(times["value"].sum())
    if total <= 0:
        return None
    return float(times.loc[times["key"] == time_key("diagnostics"), "value"].sum()) / total


# ---------------------------------------------------------------- verdicts
def replay_evidence(diag: pd.DataFrame, pid: str, rule: VerdictRule) -> PathEvidence:
    """The path's evidence rebuilt by feeding its logged probes, in step order, through the engine's update."""
    own = diag[diag["path"] == pid].pivot_table(index="step", columns="measure", values="value", aggfunc="last")
    task = diag[(diag["path"] == TASK) & (diag["measure"] == "effect")].groupby("step")["value"].last()
    probes = own.reindex(columns=list(REPLAYED)).assign(task_effect=task).dropna()  # a probe logged in full only
    evidence = PathEvidence()
    for step, measured in probes.sort_index().iterrows():
        update(evidence, int(step), measured.to_dict(), rule)
    return evidence


def _logged_verdicts(diag: pd.DataFrame, pid: str) -> dict[str, Any]:
    """What a run of an older PathScope logged per probe: its verdict codes and confidence."""
    def series(measure: str) -> pd.Series:
        rows = diag[(diag["measure"] == measure) & (diag["path"] == pid)]
        return rows.groupby("step")["value"].last()

    codes, confidence = series("verdict"), series("confidence")
    flagged = codes.index[codes.to_numpy() == -1]
    return {"verdict": VERDICT_OF_CODE.get(int(codes.iloc[-1]), NEUTRAL) if len(codes) else NEUTRAL,
            "confidence": float(confidence.iloc[-1]) if len(confidence) else 0.0,
            "first_flagged_step": int(flagged[0]) if len(flagged) else None, "probes": len(codes)}


def details_from_metrics(diag: pd.DataFrame, path_ids: list[str], rule: VerdictRule) -> dict[str, dict[str, Any]]:
    """Verdict details of a run without stored ones (still training, or stopped): the engine's own summary
    of the replayed probes, or, for an older PathScope's run, the verdicts it logged."""
    found = ordered_paths(list(diag.loc[diag["measure"] == "verdict", "path"].unique()), path_ids)
    if not measured_effect(diag):
        return {pid: _logged_verdicts(diag, pid) for pid in found}
    return {pid: replay_evidence(diag, pid, rule).summary(rule) for pid in found}


def _raising(details: dict[str, Any]) -> str | None:
    if details.get("raising_probes") is None or details.get("recent_probes") is None:
        return None
    return f"{details['raising_probes']} / {details['recent_probes']}"


def verdict_frame(details: dict[str, dict[str, Any]], path_ids: list[str]) -> pd.DataFrame:
    """One row per path (spec order) with the columns of ``VERDICT_COLUMNS``; empty where a run lacks a key."""
    records = [{"path": pid, **details[pid], "raising": _raising(details[pid])}
               for pid in ordered_paths(list(details), path_ids)]
    frame = pd.DataFrame(records).rename(columns={"first_flagged_step": "first_flag_step"})
    frame = frame.reindex(columns=VERDICT_COLUMNS)
    for column in STEP_COLUMNS:
        frame[column] = frame[column].astype("Int64")  # empty, not NaN, for never flagged
    return frame


def flagged_steps(details: dict[str, dict[str, Any]], path_ids: list[str]) -> dict[str, int]:
    """Path -> the first probe step it was judged to hurt, for paths ever flagged (even if they recovered)."""
    return {pid: int(details[pid]["first_flagged_step"]) for pid in ordered_paths(list(details), path_ids)
            if details[pid].get("first_flagged_step") is not None}


# ---------------------------------------------------------------- charts
def heatmap_figure(matrix: pd.DataFrame, measure: str) -> go.Figure:
    """Paths x probe steps of one measure on a diverging scale centred on 0."""
    spec = HEATMAPS[measure]
    fig = base_figure("training step (probe)", "path", spec.title)
    zmin, zmax = spec.fixed_range or (None, None)
    fig.add_trace(go.Heatmap(
        z=matrix.to_numpy(dtype=float), x=matrix.columns.to_numpy(), y=list(matrix.index),
        colorscale=DIVERGING_SCALE, reversescale=spec.harmful_high, zmid=0.0, zmin=zmin, zmax=zmax,
        colorbar=dict(title=dict(text=spec.colorbar)), ygap=2,
        hovertemplate=f"step %{{x}} · %{{y}}: %{{z:{spec.value_format}}}<extra></extra>",
    ))
    fig.update_layout(hovermode="closest", height=150 + 36 * len(matrix.index))
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def _stretches(codes: np.ndarray) -> list[tuple[int, int, float]]:
    """(first, last, code) of each stretch of consecutive probes with the same verdict code (NaN: not probed)."""
    stretches: list[tuple[int, int, float]] = []
    for i, code in enumerate(codes):
        if math.isnan(code):
            continue
        if stretches and stretches[-1][1] == i - 1 and stretches[-1][2] == code:
            stretches[-1] = (stretches[-1][0], i, code)
        else:
            stretches.append((i, i, code))
    return stretches


def verdict_history_figure(diag: pd.DataFrame, details: dict[str, dict[str, Any]], path_ids: list[str]) -> go.Figure:
    """One row per path: its verdict as coloured segments, each stretch of probes with one verdict drawn up to the
    next probe, with the first flag, silencing and recovery marked. Drawn from the logged verdict codes, so a
    live run draws too."""
    fig = base_figure("training step", "path", "Verdict over training")
    codes = measure_matrix(diag, "verdict", path_ids)
    steps = codes.columns.to_numpy(dtype=float)
    ends = np.append(steps[1:], steps[-1] + (probe_interval(diag) or 1)) if len(steps) else steps
    for pid, row in codes.iterrows():
        stretches = _stretches(row.to_numpy(dtype=float))
        for verdict in VERDICTS:
            segments = [(steps[first], ends[last]) for first, last, code in stretches if code == VERDICT_CODE[verdict]]
            if not segments:
                continue
            fig.add_trace(go.Scatter(
                x=[x for segment in segments for x in (*segment, None)], y=[pid, pid, None] * len(segments),
                mode="lines", name=verdict, legendgroup=verdict, legendrank=VERDICTS.index(verdict) + 1,
                showlegend=not any(t.name == verdict for t in fig.data),
                line=dict(color=verdict_color(verdict), width=SEGMENT_WIDTH),
                text=[t for start, end in segments for t in [f"{verdict} from step {start:g} to {end:g}"] * 2 + [None]],
                hovertemplate="%{y}: %{text}<extra></extra>"))
    rows = list(codes.index)
    _add_events(fig, details, rows)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rows, autorange="reversed",
                     tickvals=rows, ticktext=[_coloured(pid, path_ids) for pid in rows])
    fig.update_layout(hovermode="closest", showlegend=True, height=170 + 40 * len(rows))
    return fig


def _coloured(pid: str, path_ids: list[str]) -> str:
    return f'<span style="color:{path_color(pid, path_ids)}">{html.escape(pid)}</span>'


def _add_events(fig: go.Figure, details: dict[str, dict[str, Any]], rows: list[str]) -> None:
    """One marker trace per kind of moment (first flag, silenced, recovered) over all paths that had it."""
    for key, (name, symbol) in EVENTS.items():
        marks = [(details[pid][key], pid) for pid in rows if details.get(pid, {}).get(key) is not None]
        if not marks:
            continue
        fig.add_trace(go.Scatter(
            x=[step for step, _ in marks], y=[pid for _, pid in marks], mode="markers", name=name,
            marker=dict(symbol=symbol, size=13, color=EVENT_COLOR, line=dict(color="white", width=1.5)),
            hovertemplate=f"%{{y}}: {name} at step %{{x}}<extra></extra>"))


def flagged_weight_figure(metrics: pd.DataFrame, flagged: dict[str, int], path_ids: list[str]) -> go.Figure:
    """The weighting's weight on each flagged path against the step, a dashed line where it was flagged."""
    fig = base_figure("training step", "path weight (weighting)", "Weight on the flagged paths")
    main = metrics[metrics["phase"] == MAIN_PHASE]
    for i, (pid, step) in enumerate(flagged.items()):
        color = path_color(pid, path_ids)
        series = main[main["key"] == PATH_WEIGHT_PREFIX + pid].dropna(subset=["value"]).sort_values("step")
        steps, weights = series["step"].to_numpy(), series["value"].to_numpy(dtype=float)
        keep = minmax_indices(weights)  # a long run logs thousands of weights; spikes are kept
        fig.add_trace(go.Scatter(x=steps[keep], y=weights[keep], name=pid, mode="lines",
                                 line=dict(color=color, width=2)))
        fig.add_vline(x=step, line=dict(color=color, dash="dash", width=1.5))
        # Labels step down the plot so two paths flagged at nearby steps stay readable.
        fig.add_annotation(x=step, y=1 - 0.1 * i, xref="x", yref="paper", text=f"{pid} flagged at step {step}",
                           showarrow=False, xanchor="left", xshift=4, font=dict(color=color, size=11))
    fig.update_layout(showlegend=True)
    return fig


def ablation_frame(rows: list[AblationRow]) -> pd.DataFrame:
    frame = pd.DataFrame([dataclasses.asdict(row) for row in rows],
                         columns=[f.name for f in dataclasses.fields(AblationRow)])
    frame["first_flag_step"] = frame["first_flag_step"].astype("Int64")
    frame["agrees"] = frame["agrees"].astype("boolean")
    return frame


def ablation_effect_figure(frame: pd.DataFrame, tolerance: float) -> go.Figure:
    """Each path's measured effect on test accuracy (full − without it), coloured by the probe's verdict.

    The grey band is the tolerance: an effect inside it counts as neutral. Paths still pending
    keep their place on the axis, without a bar.
    """
    fig = base_figure("path (bar colour: the probe's verdict)", "effect on test accuracy (points)",
                      "Measured effect of each path: test accuracy with it − without it")
    measured = frame[frame["effect"].notna()]
    for verdict in (*VERDICTS, None):
        rows = measured[measured["verdict"].isna()] if verdict is None else measured[measured["verdict"] == verdict]
        if rows.empty:
            continue
        fig.add_trace(go.Bar(
            x=rows["path"].to_numpy(), y=rows["effect"].to_numpy(dtype=float), name=verdict or "no verdict",
            marker=dict(color=verdict_color(verdict)),
            hovertemplate="%{x}: %{y:+.2f} points<extra>" + (verdict or "no verdict") + "</extra>",
        ))
    fig.add_hrect(y0=-tolerance, y1=tolerance, fillcolor="#8C8C8C", opacity=0.15, line_width=0)
    fig.add_hline(y=0, line=dict(color="#1F1F1F", width=1))
    fig.update_layout(hovermode="closest", showlegend=True)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(frame["path"]),
                     range=[-0.5, len(frame) - 0.5])
    bound = max([tolerance * 2, *np.abs(measured["effect"].to_numpy(dtype=float))]) * 1.15
    fig.update_yaxes(range=[-bound, bound] if math.isfinite(bound) and bound > 0 else None)
    return fig
