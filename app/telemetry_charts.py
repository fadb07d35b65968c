"""Chart builders for the path methods' and weightings' telemetry (the Teacher importance page); pure, no Streamlit.

Inputs are array frames from ``app.queries``: index levels (step, epoch, sample) plus "label"
for per-sample arrays, one column per teacher, spot or teacher block. Teachers are coloured
by their position in the spec (``colors.teacher_color``), spots and layer groups by depth,
classes by ``colors.class_color``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts import base_figure, styled
from app.colors import (
    DECISION_SCALE, SHARE_SCALE, TASK_LOSS_COLOR, TOTAL_LOSS_COLOR, class_color, depth_colors, teacher_color,
)

WEIGHT_AXIS = "teacher weight (share, 0–1)"
MARKERS_UP_TO = 60  # shorter series also show their points: telemetry is sparse
BAR_ROW_PX = 16
MAX_LABELLED_CELLS = 120
GALLERY_ORDERS = ("most decisive first", "most even first", "batch order")


def class_name(label: int) -> str:
    return "no label" if label < 0 else f"class {label}"


def rows_at_step(frame: pd.DataFrame, step: int) -> pd.DataFrame:
    """The rows recorded at ``step``, indexed by sample (and label when the frame has labels)."""
    return frame.xs(step, level="step").droplevel("epoch")


def _line(fig: go.Figure, x: np.ndarray, y: np.ndarray, name: str, color: str, **kwargs) -> None:
    mode = "lines+markers" if len(x) <= MARKERS_UP_TO else "lines"
    fig.add_trace(go.Scatter(x=x, y=y, name=name, mode=mode, line=dict(color=color, width=2), **kwargs))


def _per_step_lines(frame: pd.DataFrame, colors: list[str], x_title: str, y_title: str, title: str) -> go.Figure:
    """One line per column of a frame indexed by step."""
    fig = base_figure(x_title, y_title, title)
    for column, color in zip(frame.columns, colors):
        _line(fig, frame.index.to_numpy(), frame[column].to_numpy(dtype=float), str(column), color)
    return fig


def _sample_labels(frame: pd.DataFrame) -> list[str]:
    return [f"{class_name(label)} · #{sample}" for sample, label in
            zip(frame.index.get_level_values("sample"), frame.index.get_level_values("label"))]


def _by_label(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by class, then sample id, so a class forms one block on the y axis."""
    return frame.sort_index(level=["label", "sample"])


# ---------------------------------------------------------------- teacher_weights view: per-sample shares over teachers
def teacher_simplex_figure(weights: pd.DataFrame, teacher_ids: list[str], step: int) -> go.Figure:
    """Three teachers: every sample as a point on the simplex (corner = all weight on that teacher).

    ``weights``: rows of one step (index sample, label), exactly three teacher columns. One
    trace per class, so the legend toggles classes; customdata holds the sample ids.
    """
    a, b, c = weights.columns
    fig = go.Figure()
    for label, rows in weights.groupby(level="label"):
        fig.add_trace(go.Scatterternary(
            a=rows[a].to_numpy(), b=rows[b].to_numpy(), c=rows[c].to_numpy(), mode="markers",
            name=class_name(int(label)), customdata=rows.index.get_level_values("sample").to_numpy(),
            marker=dict(color=class_color(int(label)), size=9, line=dict(width=0.5, color="white")),
            hovertemplate=(f"sample #%{{customdata}} · {class_name(int(label))}<br>"
                           f"{a} %{{a:.2f}} · {b} %{{b:.2f}} · {c} %{{c:.2f}}<extra></extra>"),
        ))

    def axis(teacher: str) -> dict:
        color = teacher_color(teacher, teacher_ids)
        # No ticks at 0 and 1: the three corners would print two labels on top of each other.
        return dict(title=dict(text=f"<b>{teacher}</b>", font=dict(color=color)), min=0,
                    linecolor=color, linewidth=3, tickvals=[0.2, 0.4, 0.6, 0.8], tickformat=".1f")

    fig.update_layout(
        title=f"Per-instance teacher weights at step {step} (each corner = all weight on one teacher)",
        template="plotly_white", height=480, margin=dict(l=50, r=50, t=80, b=40),
        ternary=dict(sum=1, aaxis=axis(a), baxis=axis(b), caxis=axis(c)),
        legend=dict(title="class"),
    )
    return fig


def teacher_bars_figure(weights: pd.DataFrame, teacher_ids: list[str], step: int) -> go.Figure:
    """Any number of teachers: one stacked bar per sample, sorted by class (rows of one step)."""
    rows = _by_label(weights)
    names = _sample_labels(rows)
    fig = base_figure(WEIGHT_AXIS, "sample", f"Per-instance teacher weights at step {step}")
    for teacher in rows.columns:
        fig.add_trace(go.Bar(
            x=rows[teacher].to_numpy(), y=names, orientation="h", name=teacher,
            marker=dict(color=teacher_color(teacher, teacher_ids)),
            hovertemplate=f"%{{y}}<br>{teacher}: %{{x:.2f}}<extra></extra>",
        ))
    # Plotly lists stacked bars' legend in reverse; keep it in the teachers' order like every other chart.
    fig.update_layout(barmode="stack", hovermode="closest", height=140 + BAR_ROW_PX * len(rows),
                      legend_traceorder="normal")
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(type="category", autorange="reversed", tickfont=dict(size=10))
    return fig


def class_mean_weights(weights: pd.DataFrame, label: int | None) -> pd.DataFrame:
    """Mean weight of each teacher per step over the samples of ``label`` (None: all samples)."""
    if label is not None:
        weights = weights[weights.index.get_level_values("label") == label]
    return weights.groupby(level="step").mean()


def class_weight_figure(means: pd.DataFrame, teacher_ids: list[str], label: int | None) -> go.Figure:
    who = "all samples" if label is None else class_name(label)
    colors = [teacher_color(t, teacher_ids) for t in means.columns]
    fig = _per_step_lines(means, colors, "training step", f"mean {WEIGHT_AXIS}", f"Mean teacher weight · {who}")
    fig.update_yaxes(range=[0, 1])
    return fig


def theta_norm_figure(norms: pd.DataFrame, teacher_ids: list[str]) -> go.Figure:
    """||theta_m|| of each teacher's latent vector over training (rows recorded with sample -1)."""
    per_step = norms.groupby(level="step").last()
    colors = [teacher_color(t, teacher_ids) for t in per_step.columns]
    return _per_step_lines(per_step, colors, "training step", "‖θ‖ (L2 norm)", "Teacher latent vectors ‖θ_m‖")


def gallery_samples(weights: pd.DataFrame, order: str, count: int) -> pd.DataFrame:
    """``count`` rows of one step: the most decisive (highest top weight), the most even, or as recorded."""
    if order == GALLERY_ORDERS[2]:
        return weights.head(count)
    top = weights.max(axis=1)
    ranked = top.sort_values(ascending=order == GALLERY_ORDERS[1], kind="stable")
    return weights.loc[ranked.index[:count]]


def trust_extremes(row: pd.Series) -> tuple[str, str]:
    """(most trusted, least trusted) teacher of one sample."""
    return str(row.idxmax()), str(row.idxmin())


def sample_weight_figure(row: pd.Series, teacher_ids: list[str]) -> go.Figure:
    """A small bar chart of one sample's teacher weights, titled with its most and least trusted teacher."""
    most, least = trust_extremes(row)
    fig = go.Figure(go.Bar(
        x=[str(t) for t in row.index], y=row.to_numpy(dtype=float),
        marker=dict(color=[teacher_color(str(t), teacher_ids) for t in row.index]),
        hovertemplate="%{x}: %{y:.2f}<extra></extra>",
    ))
    fig.update_layout(
        title=dict(text=f"▲ {most} {row[most]:.2f} · ▼ {least} {row[least]:.2f}", font=dict(size=12)),
        template="plotly_white", height=170, margin=dict(l=5, r=5, t=30, b=5), showlegend=False,
    )
    fig.update_yaxes(range=[0, 1], title_text="weight", title_font=dict(size=10))
    return fig


# ---------------------------------------------------------------- routing view: per-sample decisions per spot
def spot_fractions(decisions: pd.DataFrame) -> pd.DataFrame:
    """Share of the batch distilled at each spot, per recorded step (mean of the 0/1 decisions)."""
    return decisions.groupby(level="step").mean()


def spot_fraction_figure(fractions: pd.DataFrame) -> go.Figure:
    fig = _per_step_lines(fractions, depth_colors(len(fractions.columns)), "training step",
                          "fraction of the batch distilled", "Fraction distilled per spot (shallow → deep)")
    fig.update_yaxes(range=[0, 1.02])
    return fig


def decision_map_figure(decisions: pd.DataFrame, step: int) -> go.Figure:
    """The samples x spots decisions of one step, samples sorted by class."""
    rows = _by_label(decisions)
    fig = base_figure("spot (routing order)", "sample", f"Routing decisions at step {step}")
    fig.add_trace(go.Heatmap(
        z=rows.to_numpy(dtype=float), x=list(rows.columns), y=_sample_labels(rows), zmin=0, zmax=1,
        colorscale=DECISION_SCALE, xgap=1, ygap=1,
        colorbar=dict(tickvals=[0, 1], ticktext=["student block", "distilled"], len=0.5),
        hovertemplate="%{y} · %{x}: %{z:.0f}<extra></extra>",
    ))
    fig.update_layout(hovermode="closest", height=140 + BAR_ROW_PX * len(rows))
    fig.update_yaxes(type="category", autorange="reversed", tickfont=dict(size=10))
    return fig


def spot_use_by_class(decisions: pd.DataFrame) -> pd.DataFrame:
    """Mean decision per (class, spot) over every recorded step: how often each class is distilled where."""
    return decisions.groupby(level="label").mean()


def spot_use_figure(use: pd.DataFrame) -> go.Figure:
    fig = base_figure("spot (routing order)", "class", "Spot use by class (share distilled, all logged steps)")
    fig.add_trace(go.Heatmap(
        z=use.to_numpy(dtype=float), x=list(use.columns), y=[class_name(int(c)) for c in use.index],
        zmin=0, zmax=1, colorscale=SHARE_SCALE, texttemplate="%{z:.2f}", colorbar=dict(title="share"),
        hovertemplate="%{y} · %{x}: %{z:.2f}<extra></extra>",
    ))
    fig.update_layout(hovermode="closest", height=max(340, 120 + 28 * len(use)))
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def agent_loss_figure(losses: pd.DataFrame) -> go.Figure:
    """The routed network's CE (l_route, what trains the policy) against the student's own CE."""
    per_step = losses.groupby(level="step").last()
    fig = base_figure("training step", "cross-entropy (nats)", "Routed network vs student")
    names = {"l_route": "l_route (routed network)", "l_student": "l_student (student alone)"}
    colors = {"l_route": DECISION_SCALE[-1][1], "l_student": TASK_LOSS_COLOR}
    for column in per_step.columns:
        _line(fig, per_step.index.to_numpy(), per_step[column].to_numpy(dtype=float),
              names.get(column, column), colors.get(column, TOTAL_LOSS_COLOR))
    return fig


# ---------------------------------------------------------------- group_heatmaps view: per-group weights over steps
def alpha_heatmap_figure(alphas: pd.DataFrame, group: str) -> go.Figure:
    """One layer group's alpha over the search: rows = teacher blocks, columns = search steps."""
    per_step = alphas.groupby(level="step").last()
    values = per_step.to_numpy(dtype=float).T
    fig = base_figure("search step", "teacher block (shallow → deep)", f"α of layer group {group}")
    fig.add_trace(go.Heatmap(
        z=values, x=per_step.index.to_numpy(), y=list(per_step.columns),
        zmin=0, zmax=1, colorscale=SHARE_SCALE, colorbar=dict(title="α"), xgap=1, ygap=1,
        # Values in the cells while they stay legible; the hover has them otherwise.
        texttemplate="%{z:.2f}" if values.size <= MAX_LABELLED_CELLS else None,
        hovertemplate="step %{x} · %{y}: α %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(hovermode="closest", height=max(260, 140 + 40 * len(per_step.columns)))
    fig.update_xaxes(type="category")  # one column per search epoch, labelled by its step
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def alpha_entropy_figure(search_metrics: pd.DataFrame, groups: list[str], prefix: str) -> go.Figure:
    """Entropy of each group's alpha over search steps (keys ``prefix + group``); log(N) means uniform,
    0 means one block."""
    fig = base_figure("search step", "entropy of α (nats)", "α entropy per layer group")
    for group, color in zip(groups, depth_colors(len(groups))):
        series = search_metrics[search_metrics["key"] == prefix + group].sort_values("step")
        if not series.empty:
            _line(fig, series["step"].to_numpy(), series["value"].to_numpy(dtype=float), group, color)
    return fig


def bridge_loss_figure(search_metrics: pd.DataFrame, ts_key: str, st_key: str) -> go.Figure:
    """L_TS (CE, left axis; key ``ts_key``) and L_ST (MSE, right axis; ``st_key``): different units, so each
    has its own axis."""
    fig = styled(make_subplots(specs=[[{"secondary_y": True}]]), "Bridge losses: L_TS vs L_ST")
    for key, name, color, right in ((ts_key, "L_TS (teacher → student)", TOTAL_LOSS_COLOR, False),
                                    (st_key, "L_ST (student → teacher)", TASK_LOSS_COLOR, True)):
        series = search_metrics[search_metrics["key"] == key].sort_values("step")
        mode = "lines+markers" if len(series) <= MARKERS_UP_TO else "lines"
        fig.add_trace(go.Scatter(x=series["step"].to_numpy(), y=series["value"].to_numpy(dtype=float), name=name,
                                 mode=mode, line=dict(color=color, width=2)), secondary_y=right)
    fig.update_xaxes(title_text="search step")
    fig.update_yaxes(title_text="L_TS (cross-entropy, nats)", secondary_y=False)
    fig.update_yaxes(title_text="L_ST (mean squared error)", secondary_y=True, showgrid=False)
    # The right axis takes the legend's usual place: below the plot, it covers neither ticks nor title.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0))
    return fig
