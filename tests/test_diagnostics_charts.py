"""app.diagnostics_charts: the probe's series reshaped per path, the verdict table and the page's figures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app import diagnostics_charts as dc
from app.colors import VERDICT_COLORS, path_color
from engine.ablation import AblationRow

PATHS = ["b-first", "a-second"]  # spec order differs from sorted order on purpose


def long_frame(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """(phase, step, key, value) rows in the store's long format."""
    return pd.DataFrame([(phase, step, 0, key, value) for phase, step, key, value in rows],
                        columns=["phase", "step", "epoch", "key", "value"])


def probe_rows(steps: list[int], verdicts: dict[str, list[int]]) -> list[tuple[str, int, str, float]]:
    rows = []
    for n, step in enumerate(steps):
        rows.append(("main", step, "diag/norm:task", 1.0))
        for i, pid in enumerate(PATHS):
            cos = (0.1 * n + 0.5) * (1 if i == 0 else -1)
            rows += [("main", step, f"diag/cos_task:{pid}", cos), ("main", step, f"diag/cos_val:{pid}", cos / 2),
                     ("main", step, f"diag/lookahead:{pid}", -cos / 100), ("main", step, f"diag/score:{pid}", 0.75 * cos),
                     ("main", step, f"diag/verdict:{pid}", verdicts[pid][n]),
                     ("main", step, f"diag/confidence:{pid}", 0.1 * n)]
    return rows


STEPS = [0, 4, 8, 12]
VERDICT_CODES = {"b-first": [0, 1, 1, 1], "a-second": [0, -1, 0, -1]}  # a-second recovered once, then relapsed
METRICS = long_frame(probe_rows(STEPS, VERDICT_CODES) + [("teacher:t", 0, "diag/cos_task:x", 9.0),
                                                         ("main", 0, "loss/total", 2.0)])


def test_diag_frame_reads_measure_and_path_of_the_main_phase() -> None:
    diag = dc.diag_frame(METRICS)
    assert set(diag["measure"]) == {"norm", "cos_task", "cos_val", "lookahead", "score", "verdict", "confidence"}
    assert set(diag["path"]) == {"task", *PATHS}  # the teacher phase's row and the loss are left out
    assert dc.has_diagnostics(METRICS) and not dc.has_diagnostics(METRICS[METRICS["key"] == "loss/total"])
    assert dc.diag_frame(METRICS[METRICS["key"] == "loss/total"]).empty


def test_measure_matrix_has_paths_in_spec_order_and_nan_where_unprobed() -> None:
    metrics = long_frame(probe_rows(STEPS, VERDICT_CODES) + [("main", 16, "diag/cos_task:zz-unknown", 0.3)])
    matrix = dc.measure_matrix(dc.diag_frame(metrics), "cos_task", PATHS)
    assert list(matrix.index) == [*PATHS, "zz-unknown"] and list(matrix.columns) == [*STEPS, 16]
    assert matrix.loc["b-first", 8] == pytest.approx(0.7) and matrix.loc["a-second", 0] == pytest.approx(-0.5)
    assert math.isnan(matrix.loc["b-first", 16]) and math.isnan(matrix.loc["zz-unknown", 0])


def test_details_from_metrics_summarise_like_the_engine() -> None:
    details = dc.details_from_metrics(dc.diag_frame(METRICS), PATHS, window=2)
    assert list(details) == PATHS
    first, second = details["b-first"], details["a-second"]
    assert first["verdict"] == "helps" and first["first_flagged_step"] is None
    assert second["verdict"] == "hurts" and second["first_flagged_step"] == 4  # the first flag, not the latest
    assert first["confidence"] == pytest.approx(0.3) and first["probes"] == 4
    assert first["mean_cos_task"] == pytest.approx((0.7 + 0.8) / 2)  # the last two probes only
    assert second["mean_lookahead"] == pytest.approx((0.007 + 0.008) / 2)


def test_verdict_frame_and_flagged_steps() -> None:
    details = dc.details_from_metrics(dc.diag_frame(METRICS), PATHS, window=8)
    frame = dc.verdict_frame(details, PATHS)
    assert list(frame.columns) == dc.VERDICT_COLUMNS
    assert frame["path"].tolist() == PATHS and frame["verdict"].tolist() == ["helps", "hurts"]
    assert frame["first_flag_step"].dtype == "Int64" and frame["first_flag_step"].isna().tolist() == [True, False]
    assert dc.flagged_steps(details, PATHS) == {"a-second": 4}
    assert dc.verdict_frame({}, PATHS).columns.tolist() == dc.VERDICT_COLUMNS


def test_heatmaps_are_diverging_around_zero_with_red_the_harmful_end() -> None:
    diag = dc.diag_frame(METRICS)
    cos = dc.heatmap_figure(dc.measure_matrix(diag, "cos_val", PATHS), "cos_val")
    (trace,) = cos.data
    assert trace.zmid == 0 and (trace.zmin, trace.zmax) == (-1, 1) and not trace.reversescale
    assert list(trace.y) == PATHS and list(trace.x) == STEPS
    np.testing.assert_allclose(trace.z[1], [-0.25, -0.3, -0.35, -0.4])
    assert cos.layout.xaxis.title.text == "training step (probe)" and cos.layout.yaxis.autorange == "reversed"
    # RdBu runs red -> blue: a positive lookahead raises validation loss, so its scale is reversed.
    (look,) = dc.heatmap_figure(dc.measure_matrix(diag, "lookahead", PATHS), "lookahead").data
    assert look.reversescale and look.zmin is None and look.zmid == 0
    assert "nats" in look.colorbar.title.text


def test_flagged_weight_figure_marks_the_flag_in_the_path_colour() -> None:
    weights = long_frame([("main", s, f"weight/path:{pid}", w) for s in range(0, 20, 2)
                          for pid, w in zip(PATHS, (1.0, 0.5 - 0.01 * s))])
    fig = dc.flagged_weight_figure(weights, {"a-second": 8}, PATHS)
    (line,) = fig.data
    assert line.name == "a-second" and line.line.color == path_color("a-second", PATHS)
    np.testing.assert_allclose(line.y, [0.5 - 0.01 * s for s in range(0, 20, 2)])
    (mark,) = fig.layout.shapes
    assert mark.x0 == mark.x1 == 8 and mark.line.color == path_color("a-second", PATHS)
    assert fig.layout.annotations[0].text == "a-second flagged at step 8"


def _row(path: str, verdict: str | None, effect: float | None) -> AblationRow:
    return AblationRow(path=path, verdict=verdict, first_flag_step=None, acc_full=90.0,
                       acc_without=None if effect is None else 90.0 - effect, effect=effect, acc_only=None,
                       acc_no_paths=None, alone_gain=None, measured=None, agrees=None,
                       status="done" if effect is not None else "pending")


def test_ablation_effects_are_coloured_by_verdict_and_pending_paths_keep_their_place() -> None:
    frame = dc.ablation_frame([_row("p1", "helps", 2.0), _row("p2", "hurts", -3.0), _row("p3", "hurts", None),
                               _row("p4", None, 0.1)])
    assert frame["agrees"].dtype == "boolean" and frame["first_flag_step"].dtype == "Int64"
    fig = dc.ablation_effect_figure(frame, tolerance=0.5)
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"helps", "hurts", "no verdict"}
    assert list(bars["hurts"].x) == ["p2"] and list(bars["hurts"].y) == [-3.0]
    assert bars["hurts"].marker.color == VERDICT_COLORS["hurts"]
    assert list(fig.layout.xaxis.categoryarray) == ["p1", "p2", "p3", "p4"]
    band = next(s for s in fig.layout.shapes if s.type == "rect")
    assert (band.y0, band.y1) == (-0.5, 0.5)
    low, high = fig.layout.yaxis.range
    assert low == -high and high > 3.0
