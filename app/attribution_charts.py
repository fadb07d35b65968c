"""Pure figure and table builders for the Attribution page (no Streamlit, no store).

Inputs are what the explain jobs stored: the sample index arrays, an explain job's items with their
entry arrays (map (C, H, W), image (C, H, W) in [0, 1]) and the run's "agree/*" metrics (phase "explain").
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.colors import TEACHER_PALETTE
from engine.vocabulary import STUDENT_MODEL, TEACHER_MODEL_PREFIX, agree_key

STUDENT = STUDENT_MODEL
TEACHER_PREFIX = TEACHER_MODEL_PREFIX
SPEARMAN_PREFIX = agree_key("spearman", "")
TOPK_PREFIX = agree_key("topk", "")
MAP_COLORSCALE = "RdBu_r"
OVERLAY_OPACITY = 0.6
SORTS = ("sample id", "highest teacher disagreement")


def teacher_color(tid: str, teacher_ids: list[str]) -> str:
    index = teacher_ids.index(tid) if tid in teacher_ids else len(teacher_ids)
    return TEACHER_PALETTE[index % len(TEACHER_PALETTE)]


def model_label(model_id: str) -> str:
    return model_id.removeprefix(TEACHER_PREFIX) if model_id.startswith(TEACHER_PREFIX) else model_id


def column_order(model_ids: list[str]) -> list[str]:
    """Teachers in spec order, then the student (the engine lists the student first)."""
    return [m for m in model_ids if m != STUDENT] + [m for m in model_ids if m == STUDENT]


# ---------------------------------------------------------------- sample picker
def sample_table(index: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per test sample: sample, label, student_pred, student_conf, disagreement, misclassified."""
    frame = pd.DataFrame({
        "sample": index["sample"].astype(int), "label": index["label"].astype(int),
        "student_pred": index["student_pred"].astype(int), "student_conf": index["student_conf"].astype(float),
        "disagreement": index["disagreement"].astype(float)})
    frame["misclassified"] = frame["student_pred"] != frame["label"]
    return frame


def filter_samples(table: pd.DataFrame, label: int | None, misclassified: bool, sort: str) -> pd.DataFrame:
    chosen = table
    if label is not None:
        chosen = chosen[chosen["label"] == label]
    if misclassified:
        chosen = chosen[chosen["misclassified"]]
    if sort == "highest teacher disagreement":
        return chosen.sort_values(["disagreement", "sample"], ascending=[False, True], kind="stable")
    return chosen.sort_values("sample", kind="stable")


# ---------------------------------------------------------------- map grid
def plane(array: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W): the channel mean (an attribution map or an image)."""
    array = np.asarray(array, dtype=np.float64)
    return array.mean(axis=0) if array.ndim == 3 else array


def row_scale(maps: list[np.ndarray]) -> float:
    """The shared colour-scale bound of one grid row: the largest |value| over its maps (1 if all zero)."""
    largest = max((float(np.abs(plane(m)).max()) for m in maps), default=0.0)
    return largest if largest > 0 else 1.0


def class_label(label: int, class_names: list[str] | None = None) -> str:
    """'3 · cat' when the dataset names its classes, else '3' (also for digits, whose names are the numbers)."""
    label = int(label)
    if class_names and 0 <= label < len(class_names) and class_names[label] != str(label):
        return f"{label} · {class_names[label]}"
    return str(label)


def caption(label: int | str, confidence: float, class_names: list[str] | None = None) -> str:
    return f"pred {class_label(label, class_names)} ({confidence * 100:.1f}%)"


def sample_row_figure(sample: int, label: int, image: np.ndarray, cells: list[dict],
                      class_names: list[str] | None = None) -> go.Figure:
    """One grid row: the input image, then each model's map over the greyscale image.

    ``cells``: dicts with model, map (C, H, W), predicted, confidence, in column order. All maps share one
    colour axis bounded by the row's largest |value|; each overlay trace is named by its model and carries
    {"sample", "model", "caption"} in ``meta``.
    """
    grey = plane(image)[::-1]  # heatmap rows go bottom-up: flip so the picture is upright
    bound = row_scale([c["map"] for c in cells])
    titles = ["input", *(model_label(c["model"]) for c in cells)]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.02)
    grey_scale = [[0.0, "black"], [1.0, "white"]]
    fig.add_trace(go.Heatmap(z=grey, colorscale=grey_scale, zmin=0, zmax=1, showscale=False, name="input",
                             hoverinfo="skip", meta={"sample": sample, "model": "input"}), row=1, col=1)
    for n, cell in enumerate(cells, start=2):
        fig.add_trace(go.Heatmap(z=grey, colorscale=grey_scale, zmin=0, zmax=1, showscale=False,
                                 hoverinfo="skip", name=f"image:{cell['model']}"), row=1, col=n)
        text = caption(cell["predicted"], cell["confidence"], class_names)
        fig.add_trace(go.Heatmap(
            z=plane(cell["map"])[::-1], coloraxis="coloraxis", opacity=OVERLAY_OPACITY, name=cell["model"],
            meta={"sample": sample, "model": cell["model"], "caption": text},
            hovertemplate=f"{model_label(cell['model'])}<br>x %{{x}}, y %{{y}}<br>attribution %{{z:.3g}}"
                          "<extra></extra>"), row=1, col=n)
        fig.update_xaxes(title_text=text, row=1, col=n)
    fig.update_xaxes(title_text=f"#{sample} · label {class_label(label, class_names)}", row=1, col=1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x", constrain="domain")
    for n in range(2, len(titles) + 1):
        fig.update_yaxes(scaleanchor=f"x{n}", row=1, col=n)
    fig.update_layout(coloraxis={"colorscale": MAP_COLORSCALE, "cmin": -bound, "cmax": bound, "cmid": 0,
                                 "colorbar": {"title": "attr.", "thickness": 10}},
                      height=230, margin={"l": 10, "r": 10, "t": 30, "b": 40})
    return fig


def grid_rows(result: dict, entries: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """The grid of an explain job: per sample {sample, label, image, cells} with cells in column order.

    ``entries`` maps an item's file to its loaded arrays; items whose file is missing are left out.
    """
    order = column_order(result["models"])
    by_key = {(item["sample"], item["model"]): item for item in result["items"]}
    rows = []
    for sample in result["samples"]:
        cells, image, label = [], None, None
        for model in order:
            item = by_key.get((sample, model))
            arrays = entries.get(item["file"]) if item else None
            if arrays is None:
                continue
            image = arrays["image"] if image is None else image
            label = item["label"]
            cells.append({"model": model, "map": arrays["map"], "predicted": item["predicted"],
                          "confidence": item["confidence"]})
        if cells:
            rows.append({"sample": sample, "label": label, "image": image, "cells": cells})
    return rows


# ---------------------------------------------------------------- agreement curves
def agreement_curves(metrics: pd.DataFrame, prefix: str, teacher_ids: list[str]) -> dict[str, pd.DataFrame]:
    """Teacher id -> (epoch, value) rows of one agreement metric, in spec order."""
    rows = metrics[metrics["key"].str.startswith(prefix)]
    curves = {}
    for tid in [*teacher_ids, *sorted({k.removeprefix(prefix) for k in rows["key"]} - set(teacher_ids))]:
        curve = rows[rows["key"] == prefix + tid].sort_values("step")
        if not curve.empty:
            curves[tid] = curve[["epoch", "value"]].reset_index(drop=True)
    return curves


def agreement_figure(metrics: pd.DataFrame, teacher_ids: list[str], which: str) -> go.Figure:
    """Student-teacher map agreement per epoch, one line per teacher (which: "spearman" or "topk")."""
    prefix, title, y_title = ((SPEARMAN_PREFIX, "Map agreement · Spearman rank correlation", "Spearman ρ")
                              if which == "spearman" else
                              (TOPK_PREFIX, "Map agreement · top-k overlap", "top-k overlap"))
    fig = go.Figure()
    for tid, curve in agreement_curves(metrics, prefix, teacher_ids).items():
        fig.add_trace(go.Scatter(x=curve["epoch"].to_numpy(), y=curve["value"].to_numpy(dtype=float),
                                 mode="lines+markers", name=tid,
                                 line={"color": teacher_color(tid, teacher_ids)}))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=y_title, height=320,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend_title="teacher")
    fig.update_xaxes(dtick=1)
    return fig
