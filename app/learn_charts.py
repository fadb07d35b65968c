"""Figures of the Learn page: pure functions of numbers (no Streamlit, no model loading).

Three lessons: soft targets at a temperature, the candidate paths between two models, and how
weightings combine two conflicting gradients. The weighting toy reuses the engine's own PCGrad
projection and MGDA min-norm solver, so what the page draws is what training would do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from app.colors import TOTAL_LOSS_COLOR, path_color, series_color
from engine.models.spots import SpotInfo
from engine.paths.candidates import Candidate
from engine.weightings.mgda import min_norm_point
from engine.weightings.pcgrad import project_conflicting

# ---------------------------------------------------------------- temperature
TRUE_CLASS_COLOR = "#F28E2B"
OTHER_CLASS_COLOR = "#4E79A7"


def softened(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T), shifted by the maximum so large logits at small T do not overflow."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    weights = np.exp(scaled - scaled.max())
    return weights / weights.sum()


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy in nats; zero-probability classes add nothing."""
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())


def kd_loss(teacher: np.ndarray, student: np.ndarray, temperature: float) -> float:
    """T^2 KL(teacher || student) of two softened distributions: the kd distiller's loss on one sample."""
    p = teacher[teacher > 0]
    return float(temperature**2 * (p * (np.log(p) - np.log(student[teacher > 0]))).sum())


def temperature_figure(logits: np.ndarray, temperature: float, true_class: int, class_names: list[str]
                       ) -> go.Figure:
    """Bars of softmax(z/T) with the true class highlighted, and softmax(z) as dots for comparison."""
    probs = softened(logits, temperature)
    colors = [TRUE_CLASS_COLOR if c == true_class else OTHER_CLASS_COLOR for c in range(len(probs))]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=class_names, y=probs, name=f"softmax(z / {temperature:g})", marker_color=colors,
                         hovertemplate="class %{x}: %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=class_names, y=softened(logits, 1.0), name="softmax(z), T = 1", mode="markers",
                             marker=dict(color=TOTAL_LOSS_COLOR, symbol="line-ew-open", size=22, line_width=2),
                             hovertemplate="class %{x} at T = 1: %{y:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"Teacher's soft targets at T = {temperature:g} (true class in orange)", template="plotly_white",
        height=340, margin=dict(l=10, r=10, t=50, b=10), bargap=0.25,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="probability", range=[0, 1.02])
    return fig


# ---------------------------------------------------------------- paths
COLUMN_X = {"teacher": (0.0, 0.36), "student": (0.64, 1.0)}  # (left, right) edge of each column's boxes
BOX_HALF_HEIGHT = 0.34  # in rows: boxes never touch, even in the column with the most spots
ROW_PX = 78
KIND_FILL = {"feature_map": "#EEF2FF", "embedding": "#ECFDF5", "logits": "#FEF3C7"}
TEXT_COLOR = "#1F2937"  # the theme's text colour: box labels must read as text, not as faint axis ticks
KIND_LABEL = {"feature_map": "feature map", "embedding": "embedding", "logits": "logits"}


def spot_rows(n: int, rows: int) -> np.ndarray:
    """Row positions of n spots stretched over ``rows`` rows, so both models run from input (top) to logits."""
    if n == 1:
        return np.array([(rows - 1) / 2])
    return np.linspace(0.0, rows - 1, n)


def candidate_path_ids(candidates: list[Candidate], teacher_id: str) -> list[str]:
    """The path id each candidate gets with its suggested distiller, as Configure would name it."""
    return [c.path_id(teacher_id, c.distillers[0]) for c in candidates]


def _spot_boxes(fig: go.Figure, side: str, arch: str, spots: list[SpotInfo], rows: int) -> dict[str, float]:
    """Draw one model's column of spot boxes; return each spot's row."""
    left, right = COLUMN_X[side]
    ys = spot_rows(len(spots), rows)
    for spot, y in zip(spots, ys):
        fig.add_shape(type="rect", x0=left, x1=right, y0=y - BOX_HALF_HEIGHT, y1=y + BOX_HALF_HEIGHT,
                      fillcolor=KIND_FILL[spot.kind], line=dict(color="#9CA3AF", width=1))
        shape = "×".join(str(d) for d in spot.shape)
        fig.add_annotation(x=(left + right) / 2, y=y, showarrow=False, font=dict(size=13, color=TEXT_COLOR),
                           text=f"<b>{spot.name}</b><br>{KIND_LABEL[spot.kind]} · {shape}")
    fig.add_annotation(x=(left + right) / 2, y=-0.75, showarrow=False, font=dict(size=16, color=TEXT_COLOR),
                       text=f"<b>{side}</b> · {arch}")
    return {spot.name: float(y) for spot, y in zip(spots, ys)}


def path_figure(teacher_arch: str, teacher_spots: list[SpotInfo], student_arch: str, student_spots: list[SpotInfo],
                candidates: list[Candidate]) -> go.Figure:
    """Both models as columns of spots (input at the top) and one coloured line per candidate path."""
    rows = max(len(teacher_spots), len(student_spots))
    fig = go.Figure()
    teacher_y = _spot_boxes(fig, "teacher", teacher_arch, teacher_spots, rows)
    student_y = _spot_boxes(fig, "student", student_arch, student_spots, rows)
    path_ids = candidate_path_ids(candidates, teacher_arch)
    for candidate, pid in zip(candidates, path_ids):
        color = path_color(pid, path_ids)
        y0, y1 = teacher_y[candidate.teacher_spot.name], student_y[candidate.student_spot.name]
        x0, x1 = COLUMN_X["teacher"][1], COLUMN_X["student"][0]
        others = ", ".join(candidate.distillers[1:]) or "none"
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", name=pid, line=dict(color=color, width=3),
                                 hovertemplate=f"{pid}<br>also fits: {others}<extra></extra>"))
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=f"<b>{candidate.distillers[0]}</b>",
                           showarrow=False, bgcolor="white", bordercolor=color, borderwidth=2, borderpad=3,
                           font=dict(color=color, size=14))
    fig.update_layout(template="plotly_white", height=ROW_PX * rows + 90, showlegend=False,
                      margin=dict(l=10, r=10, t=10, b=10))
    fig.update_xaxes(visible=False, range=[-0.02, 1.02])
    fig.update_yaxes(visible=False, range=[rows - 1 + 0.6, -1.15])  # reversed: the input side on top
    return fig


# ---------------------------------------------------------------- weightings
GRADIENT_COLORS = (series_color(0), series_color(1))
WEIGHTING_COLORS = {"equal": TOTAL_LOSS_COLOR, "uncertainty": series_color(4), "pcgrad": series_color(2),
                     "mgda": series_color(6)}
CONTOUR_GRID = 90
CONTOUR_LEVELS = 8


@dataclass(frozen=True)
class ToyProblem:
    """L_k(theta) = 0.5 scale_k ||theta - minimum_k||^2 in two parameters, looked at from ``point``."""

    minima: np.ndarray  # (2, 2): row k is L_k's minimum
    scales: np.ndarray  # (2,)
    point: np.ndarray  # (2,)

    def losses_at(self, theta: np.ndarray) -> np.ndarray:
        """(2, ...) losses at points theta of shape (2, ...) (one point, or a grid of them)."""
        expand = (slice(None),) + (None,) * (theta.ndim - 1)  # broadcast a minimum over the grid axes
        return np.stack([0.5 * s * ((theta - m[expand]) ** 2).sum(0) for m, s in zip(self.minima, self.scales)])

    def losses(self) -> np.ndarray:
        return self.losses_at(self.point)

    def gradients(self) -> np.ndarray:
        """(2, 2): row k is grad L_k at the current point."""
        return self.scales[:, None] * (self.point[None] - self.minima)


def toy_problem(angle_deg: float, scale: float) -> ToyProblem:
    """Two losses whose minima sit at distance 1 from the origin, ``angle_deg`` apart; L2 is ``scale`` x steeper.

    At the origin each descent direction points at its loss's minimum, so the angle between the two
    gradients is ``angle_deg``: above 90 degrees they conflict (g1 . g2 < 0).
    """
    half = math.radians(angle_deg) / 2
    minima = np.array([[math.sin(half), math.cos(half)], [-math.sin(half), math.cos(half)]])
    return ToyProblem(minima=minima, scales=np.array([1.0, scale]), point=np.zeros(2))


def pcgrad_components(grads: np.ndarray) -> np.ndarray:
    """The engine's PCGrad projection of two gradients (K = 2: the random order does not matter)."""
    projected = project_conflicting(torch.from_numpy(grads).double(), torch.Generator().manual_seed(0))
    return projected.numpy()


def mgda_weights(grads: np.ndarray) -> np.ndarray:
    """The engine's min-norm point: alpha on the simplex minimising ||alpha_1 g_1 + alpha_2 g_2||."""
    return min_norm_point(torch.from_numpy(grads @ grads.T)).numpy()


def update_directions(grads: np.ndarray, losses: np.ndarray) -> dict[str, np.ndarray]:
    """The combined gradient d of each weighting; a step moves along -d.

    uncertainty uses Kendall's weights at their stationary point, w_k = 1 / (2 L_k) (see
    engine/weightings/uncertainty.py); mgda is the min-norm point itself, not scaled by K.
    """
    return {
        "equal": grads.sum(0),
        "uncertainty": (grads / (2 * losses[:, None])).sum(0),
        "pcgrad": pcgrad_components(grads).sum(0),
        "mgda": mgda_weights(grads) @ grads,
    }


def loss_changes(grads: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """First-order change of each loss per unit step along -direction (negative: that loss goes down)."""
    return -(grads @ direction)


def _arrow(fig: go.Figure, vector: np.ndarray, origin: np.ndarray, name: str, color: str, dash: str = "solid",
           width: float = 3) -> None:
    """An arrow from ``origin``: a line whose end marker is an arrowhead turned along it."""
    tip = origin + vector
    fig.add_trace(go.Scatter(
        x=[origin[0], tip[0]], y=[origin[1], tip[1]], mode="lines+markers", name=name,
        line=dict(color=color, width=width, dash=dash),
        marker=dict(symbol="arrow", size=[0, 15], angleref="previous", color=color),
        hovertemplate=f"{name}: (%{{x:.2f}}, %{{y:.2f}})<extra></extra>",
    ))


def _view_range(points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Equal x and y ranges holding every point with a margin: with equal axis scales the view is square,
    so the contours fill it instead of leaving bands that plotly would add to keep the aspect."""
    low, high = points.min(0), points.max(0)
    centre, half = (low + high) / 2, 0.6 * max(float((high - low).max()), 1.0)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def weighting_figure(problem: ToyProblem, directions: dict[str, np.ndarray]) -> go.Figure:
    """Contours of both losses, their descent directions, PCGrad's projected parts and each weighting's step."""
    grads = problem.gradients()
    origin = problem.point
    tips = [origin - g for g in grads] + [origin - d for d in directions.values()]
    (x0, x1), (y0, y1) = _view_range(np.vstack([origin, *problem.minima, *tips]))
    xs, ys = np.linspace(x0, x1, CONTOUR_GRID), np.linspace(y0, y1, CONTOUR_GRID)
    surfaces = problem.losses_at(np.stack(np.meshgrid(xs, ys)))
    fig = go.Figure()
    for k in range(2):
        color = GRADIENT_COLORS[k]
        fig.add_trace(go.Contour(x=xs, y=ys, z=surfaces[k], name=f"L{k + 1} contours", showscale=False,
                                 contours=dict(coloring="lines"), ncontours=CONTOUR_LEVELS, line=dict(width=1),
                                 colorscale=[[0, color], [1, color]], opacity=0.45, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=problem.minima[:, 0], y=problem.minima[:, 1], mode="markers+text",
                             text=["min L1", "min L2"], textposition="top center", name="minima",
                             marker=dict(color=list(GRADIENT_COLORS), size=10, symbol="x"), showlegend=False))
    fig.add_trace(go.Scatter(x=[origin[0]], y=[origin[1]], mode="markers+text", text=["θ"], name="current point",
                             textposition="bottom center", marker=dict(color=TOTAL_LOSS_COLOR, size=9),
                             showlegend=False))
    for k in range(2):
        _arrow(fig, -grads[k], origin, f"−∇L{k + 1}", GRADIENT_COLORS[k], width=2)
    for k, part in enumerate(pcgrad_components(grads)):
        if not np.allclose(part, grads[k]):  # only a projected gradient is worth a second arrow
            _arrow(fig, -part, origin, f"PCGrad's projected −∇L{k + 1}", WEIGHTING_COLORS["pcgrad"], "dot", 2)
    # Longest first, so a short step is drawn on top of the long ones it lies along.
    for name, direction in sorted(directions.items(), key=lambda item: -np.linalg.norm(item[1])):
        _arrow(fig, -direction, origin, name, WEIGHTING_COLORS[name])
    fig.update_layout(template="plotly_white", height=560, margin=dict(l=10, r=10, t=40, b=10),
                      title="The step each weighting takes from the current point θ", hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0.0))
    fig.update_xaxes(range=[x0, x1], title_text="θ₁", zeroline=False, constrain="domain")
    fig.update_yaxes(range=[y0, y1], title_text="θ₂", scaleanchor="x", scaleratio=1, zeroline=False)
    return fig
