"""Tables and chart builders for the Negative transfer page; pure functions, no Streamlit.

Inputs are a run's metrics in the store's long format (phase, step, epoch, key, value) holding
the probe's "diag/<measure>:<path id>" series, the verdict details the engine stores in a
finished run's result, and ``engine.ablation`` rows. Paths are listed in the spec's order and
coloured by ``colors.path_color``; verdicts by ``colors.verdict_color``. In every signed chart
red is the harmful end.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.charts import PATH_WEIGHT_PREFIX, base_figure, minmax_indices
from app.colors import DIVERGING_SCALE, path_color, verdict_color
from engine.ablation import AblationRow
from engine.vocabulary import DIAG_PREFIX, HELPS, HURTS, MAIN_PHASE, NEUTRAL, VERDICT_OF_CODE  # noqa: F401

VERDICTS = (HURTS, NEUTRAL, HELPS)
VERDICT_COLUMNS = ["path", "verdict", "confidence", "first_flag_step", "probes", "mean_score",
                   "mean_cos_task", "mean_cos_val", "mean_lookahead"]


@dataclasses.dataclass(frozen=True)
class Heatmap:
    title: str
    colorbar: str
    value_format: str
    harmful_high: bool  # True when a positive value is the harmful end (reverses the colours)
    fixed_range: tuple[float, float] | None  # cosines share one scale across runs


HEATMAPS: dict[str, Heatmap] = {
    "cos_task": Heatmap("Cosine between each path's gradient and the task gradient (same batch)",
                        "cosine", ".3f", False, (-1.0, 1.0)),
    "cos_val": Heatmap("Cosine between each path's gradient and the validation gradient",
                       "cosine", ".3f", False, (-1.0, 1.0)),
    "lookahead": Heatmap("Lookahead: predicted change of validation loss from each path's share of a step",
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


def ordered_paths(found: list[str], path_ids: list[str]) -> list[str]:
    """Paths in spec order, then any the spec does not list (a spec edited after logging)."""
    return [p for p in path_ids if p in found] + sorted(set(found) - set(path_ids))


def measure_matrix(diag: pd.DataFrame, measure: str, path_ids: list[str]) -> pd.DataFrame:
    """Paths (rows, spec order) x probe steps (columns) of one measure; NaN where a path was not probed."""
    rows = diag[diag["measure"] == measure]
    table = rows.pivot_table(index="path", columns="step", values="value", aggfunc="last")
    return table.reindex(ordered_paths(list(table.index), path_ids))


# ---------------------------------------------------------------- verdicts
def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def _live_details(diag: pd.DataFrame, pid: str, window: int) -> dict[str, Any]:
    def series(measure: str) -> pd.Series:
        rows = diag[(diag["measure"] == measure) & (diag["path"] == pid)]
        return rows.set_index("step")["value"].sort_index()

    codes = series("verdict")
    confidence = series("confidence")
    flagged = codes.index[codes.to_numpy() == -1]
    recent = {m: series(m).to_numpy()[-window:] for m in ("score", "cos_val", "cos_task", "lookahead")}
    return {"verdict": VERDICT_OF_CODE.get(int(codes.iloc[-1]), NEUTRAL) if len(codes) else NEUTRAL,
            "confidence": float(confidence.iloc[-1]) if len(confidence) else 0.0,
            "first_flagged_step": int(flagged[0]) if len(flagged) else None, "probes": len(codes),
            **{f"mean_{m}": _mean(values) for m, values in recent.items()}}


def details_from_metrics(diag: pd.DataFrame, path_ids: list[str], window: int) -> dict[str, dict[str, Any]]:
    """Verdict details of a run still training (a finished run stores the engine's own in its result).

    The same summary the engine makes: the latest verdict and confidence, the first probe step
    judged to hurt, and means over the last ``window`` probes.
    """
    found = list(diag.loc[diag["measure"] == "verdict", "path"].unique())
    return {pid: _live_details(diag, pid, window) for pid in ordered_paths(found, path_ids)}


def verdict_frame(details: dict[str, dict[str, Any]], path_ids: list[str]) -> pd.DataFrame:
    """One row per path (spec order) with the columns of ``VERDICT_COLUMNS``."""
    records = [{"path": pid, **details[pid]} for pid in ordered_paths(list(details), path_ids)]
    frame = pd.DataFrame(records).rename(columns={"first_flagged_step": "first_flag_step"})
    frame = frame.reindex(columns=VERDICT_COLUMNS)
    frame["first_flag_step"] = frame["first_flag_step"].astype("Int64")  # empty, not NaN, for never flagged
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


def flagged_weight_figure(metrics: pd.DataFrame, flagged: dict[str, int], path_ids: list[str]) -> go.Figure:
    """The weighting's weight on each flagged path against the step, a dashed line where it was flagged."""
    fig = base_figure("training step", "path weight (weighting)", "Weight on the flagged paths")
    main = metrics[metrics["phase"] == MAIN_PHASE]
    for i, (pid, step) in enumerate(flagged.items()):
        color = path_color(pid, path_ids)
        series = main[main["key"] == PATH_WEIGHT_PREFIX + pid].dropna(subset=["value"]).sort_values("step")
        steps, weights = series["step"].to_numpy(), series["value"].to_numpy(dtype=float)
        keep = minmax_indices(weights)  # a long run logs thousands of weights; spikes are kept
        fig.add_trace(go.Scattergl(x=steps[keep], y=weights[keep], name=pid, mode="lines",
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
