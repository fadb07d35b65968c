"""app.diagnostics_charts: the probe's series reshaped per path, live verdicts replayed through the engine,
the verdict table and the page's figures.

``engine_probes`` logs a probe scenario the way engine/diagnostics/probe.py does, from evidence fed through
the engine's own ``update``; tests/test_negative_transfer.py stores it as a run."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app import diagnostics_charts as dc
from app.colors import VERDICT_COLORS, path_color
from engine.ablation import AblationRow
from engine.diagnostics.verdicts import PathEvidence, VerdictRule, rule_from, update
from engine.spec import DiagnosticsSpec
from engine.vocabulary import TASK, VERDICT_CODE, diag_key

PATHS = ["b-first", "a-second"]  # spec order differs from sorted order on purpose
RULE = VerdictRule()  # what a spec's default diagnostics settings give (engine/runner.py make_probe)
PROBE_EVERY = 4
PROBE_STEPS = list(range(0, 96, PROBE_EVERY))  # 24 probes
LOGGED = ("effect", "effect_se", "weight", "cos_val", "cos_task")  # per path, as probe.py logs them


def long_frame(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """(phase, step, key, value) rows in the store's long format."""
    return pd.DataFrame([(phase, step, 0, key, value) for phase, step, key, value in rows],
                        columns=["phase", "step", "epoch", "key", "value"])


# ---------------------------------------------------------------- the probe's series as the engine logs them
def measured(path_index: int, n: int) -> dict[str, float]:
    """Probe n of a path. The first lowers validation loss throughout (helps from step 12). The second raises it
    (flagged at step 12), has its weight cut at probe 8 (silenced at step 32), and lowers it from probe 12 on
    (no longer hurting at step 60, helping at 72)."""
    wobble = 0.0004 * ((n * 7) % 3 - 1)  # a spread across probes, so the t-statistics are finite
    task = -0.01 - 0.002 * (n % 2)
    if path_index == 0:
        return {"effect": -0.003 + wobble, "effect_se": 0.0004, "task_effect": task, "weight": 1.0,
                "cos_val": 0.3 + 10 * wobble, "cos_task": 0.4 + 10 * wobble}
    sign = 1 if n < 12 else -1
    return {"effect": sign * 0.004 + wobble, "effect_se": 0.0005, "task_effect": task,
            "weight": 1.0 if n < 8 else 0.01, "cos_val": -0.3 * sign + 10 * wobble,
            "cos_task": -0.2 * sign + 10 * wobble}


def engine_probes(path_ids: list[str], rule: VerdictRule = RULE) -> tuple[list[tuple[int, str, float]],
                                                                          dict[str, PathEvidence]]:
    """(step, key, value) rows as engine/diagnostics/probe.py logs them, and the engine's evidence behind them."""
    evidence = {pid: PathEvidence() for pid in path_ids}
    rows = []
    for n, step in enumerate(PROBE_STEPS):
        task_effect = measured(0, n)["task_effect"]
        rows += [(step, diag_key("norm", TASK), 2.0), (step, diag_key("norm", "val"), 1.8),
                 (step, diag_key("effect", TASK), task_effect)]
        for i, pid in enumerate(path_ids):
            values = measured(i, n)
            update(evidence[pid], step, values, rule)
            state = evidence[pid]
            rows += [(step, diag_key(m, pid), values[m]) for m in LOGGED]
            rows += [(step, diag_key("norm", pid), 1.5), (step, diag_key("score", pid), state.score[-1]),
                     (step, diag_key("verdict", pid), VERDICT_CODE[state.verdict]),
                     (step, diag_key("confidence", pid), state.confidence),
                     (step, diag_key("cosine_verdict", pid), VERDICT_CODE[state.cosine_verdict])]
    return rows, evidence


ROWS, EVIDENCE = engine_probes(PATHS)
SUMMARY = {pid: EVIDENCE[pid].summary(RULE) for pid in PATHS}
METRICS = long_frame([("main", step, key, value) for step, key, value in ROWS]
                     + [("teacher:t", 0, "diag/cos_task:x", 9.0), ("main", 0, "loss/total", 2.0)])


# ---------------------------------------------------------------- a run of an older PathScope (lookahead, no effect)
def old_probe_rows(steps: list[int], verdicts: dict[str, list[int]]) -> list[tuple[str, int, str, float]]:
    rows = []
    for n, step in enumerate(steps):
        rows.append(("main", step, "diag/norm:task", 1.0))
        for i, pid in enumerate(PATHS):
            cos = (0.1 * n + 0.5) * (1 if i == 0 else -1)
            rows += [("main", step, f"diag/cos_task:{pid}", cos), ("main", step, f"diag/cos_val:{pid}", cos / 2),
                     ("main", step, f"diag/lookahead:{pid}", -cos / 100),
                     ("main", step, f"diag/score:{pid}", 0.75 * cos),
                     ("main", step, f"diag/verdict:{pid}", verdicts[pid][n]),
                     ("main", step, f"diag/confidence:{pid}", 0.1 * n)]
    return rows


OLD_STEPS = [0, 4, 8, 12]
OLD_CODES = {"b-first": [0, 1, 1, 1], "a-second": [0, -1, 0, -1]}  # a-second recovered once, then relapsed
OLD_METRICS = long_frame(old_probe_rows(OLD_STEPS, OLD_CODES))


def test_the_scenario_has_every_moment_the_page_draws() -> None:
    assert SUMMARY["b-first"]["history"] == [[0, "neutral"], [12, "helps"]]
    second = SUMMARY["a-second"]
    assert second["history"] == [[0, "neutral"], [12, "hurts"], [60, "neutral"], [72, "helps"]]
    assert (second["first_flagged_step"], second["silenced_step"], second["recovered_step"]) == (12, 32, 60)


def test_diag_frame_reads_measure_and_path_of_the_main_phase() -> None:
    diag = dc.diag_frame(METRICS)
    assert set(diag["measure"]) == {"norm", "effect", "effect_se", "weight", "cos_task", "cos_val", "score",
                                    "verdict", "confidence", "cosine_verdict"}
    assert set(diag["path"]) == {"task", "val", *PATHS}  # the teacher phase's row and the loss are left out
    assert dc.has_diagnostics(METRICS) and not dc.has_diagnostics(METRICS[METRICS["key"] == "loss/total"])
    assert dc.diag_frame(METRICS[METRICS["key"] == "loss/total"]).empty
    assert dc.measured_effect(diag) and not dc.measured_effect(dc.diag_frame(OLD_METRICS))


def test_measure_matrix_has_paths_in_spec_order_and_nan_where_unprobed() -> None:
    metrics = long_frame(old_probe_rows(OLD_STEPS, OLD_CODES) + [("main", 16, "diag/cos_task:zz-unknown", 0.3)])
    matrix = dc.measure_matrix(dc.diag_frame(metrics), "cos_task", PATHS)
    assert list(matrix.index) == [*PATHS, "zz-unknown"] and list(matrix.columns) == [*OLD_STEPS, 16]
    assert matrix.loc["b-first", 8] == pytest.approx(0.7) and matrix.loc["a-second", 0] == pytest.approx(-0.5)
    assert math.isnan(matrix.loc["b-first", 16]) and math.isnan(matrix.loc["zz-unknown", 0])
    effect = dc.measure_matrix(dc.diag_frame(METRICS), "effect", PATHS)
    assert list(effect.index) == PATHS  # the task's own effect is the probe's reference, not a path


def test_replayed_details_equal_the_engines_summary() -> None:
    shuffled = METRICS.sample(frac=1.0, random_state=0)  # the store's row order does not matter
    details = dc.details_from_metrics(dc.diag_frame(shuffled), PATHS, RULE)
    assert list(details) == PATHS
    assert details == SUMMARY
    assert details["a-second"]["explanation"].startswith("lowers validation loss by 0.004 per step")


def test_replay_uses_the_runs_rule_and_skips_a_probe_logged_in_part() -> None:
    rule = VerdictRule(window=4, effect_margin=0.5)
    rows, evidence = engine_probes(PATHS, rule)
    diag = dc.diag_frame(long_frame([("main", step, key, value) for step, key, value in rows]
                                    + [("main", 96, "diag/effect:a-second", 1.0)]))  # its other series not yet
    assert dc.details_from_metrics(diag, PATHS, rule) == {pid: evidence[pid].summary(rule) for pid in PATHS}
    assert rule_from(DiagnosticsSpec(window=4, effect_margin=0.5)) == rule
    assert rule_from(DiagnosticsSpec(geometry_confirms=False)) == VerdictRule(geometry_confirms=False)


def test_an_older_runs_details_are_its_logged_verdicts() -> None:
    details = dc.details_from_metrics(dc.diag_frame(OLD_METRICS), PATHS, RULE)
    assert list(details) == PATHS
    first, second = details["b-first"], details["a-second"]
    assert first["verdict"] == "helps" and first["first_flagged_step"] is None
    assert second["verdict"] == "hurts" and second["first_flagged_step"] == 4  # the first flag, not the latest
    assert first["confidence"] == pytest.approx(0.3) and first["probes"] == 4


def test_verdict_frame_and_flagged_steps() -> None:
    frame = dc.verdict_frame(SUMMARY, PATHS)
    assert list(frame.columns) == dc.VERDICT_COLUMNS
    assert frame["path"].tolist() == PATHS and frame["verdict"].tolist() == ["helps", "helps"]
    assert frame["raising"].tolist() == ["0 / 8", "0 / 8"]
    assert frame["mean_effect"].tolist() == [SUMMARY[p]["mean_effect"] for p in PATHS]
    second = frame.iloc[1]
    assert (second["first_flag_step"], second["silenced_step"], second["recovered_step"]) == (12, 32, 60)
    for column in dc.STEP_COLUMNS:
        assert frame[column].dtype == "Int64" and pd.isna(frame[column].iloc[0])  # never flagged: empty, not NaN
    assert dc.flagged_steps(SUMMARY, PATHS) == {"a-second": 12}
    assert dc.verdict_frame({}, PATHS).columns.tolist() == dc.VERDICT_COLUMNS


def test_an_older_runs_verdict_frame_leaves_the_effect_columns_empty() -> None:
    frame = dc.verdict_frame(dc.details_from_metrics(dc.diag_frame(OLD_METRICS), PATHS, RULE), PATHS)
    assert frame["verdict"].tolist() == ["helps", "hurts"]
    assert frame[["mean_effect", "raising", "silenced_step", "cosine_verdict"]].isna().all().all()


def test_verdict_history_draws_each_probes_verdict_per_path_with_the_flag_markers() -> None:
    diag = dc.diag_frame(METRICS)
    fig = dc.verdict_history_figure(diag, SUMMARY, PATHS)
    assert fig.layout.title.text == "Verdict over training" and fig.layout.xaxis.title.text == "training step"
    segments = [t for t in fig.data if t.mode == "lines"]
    by_path: dict[str, dict[str, list]] = {}
    for trace in segments:  # one trace per path and verdict; each stretch of one verdict: start, end, gap
        (pid,) = {y for y in trace.y if y is not None}
        assert trace.line.color == VERDICT_COLORS[trace.name] and trace.name not in by_path.get(pid, {})
        by_path.setdefault(pid, {})[trace.name] = list(zip(trace.x[::3], trace.x[1::3]))
    # The last stretch ends one probe interval after the last probe.
    assert by_path["b-first"] == {"neutral": [(0, 12)], "helps": [(12, 96)]}
    assert by_path["a-second"] == {"neutral": [(0, 12), (60, 72)], "hurts": [(12, 60)], "helps": [(72, 96)]}
    assert sorted(t.name for t in segments if t.showlegend) == ["helps", "hurts", "neutral"]  # one legend entry each
    (hurting,) = [t for t in segments if t.name == "hurts"]
    assert hurting.text[:3] == ("hurts from step 12 to 60",) * 2 + (None,)  # the hover names the stretch
    marks = {t.name: list(zip(t.x, t.y)) for t in fig.data if t.mode == "markers"}
    assert marks == {"first flagged": [(12, "a-second")], "silenced": [(32, "a-second")],
                     "recovered": [(60, "a-second")]}
    assert list(fig.layout.yaxis.categoryarray) == PATHS and fig.layout.yaxis.autorange == "reversed"
    assert path_color("a-second", PATHS) in fig.layout.yaxis.ticktext[1]


def test_verdict_history_of_an_older_run_marks_what_it_has() -> None:
    diag = dc.diag_frame(OLD_METRICS)
    details = dc.details_from_metrics(diag, PATHS, RULE)
    fig = dc.verdict_history_figure(diag, details, PATHS)
    marks = {t.name: list(zip(t.x, t.y)) for t in fig.data if t.mode == "markers"}
    assert marks == {"first flagged": [(4, "a-second")]}


def test_probe_cost_is_its_share_of_the_step_time() -> None:
    times = [("main", s, f"time/{section}", ms) for s in (10, 20)
             for section, ms in (("data", 2.0), ("student", 5.0), ("backward", 2.0), ("diagnostics", 1.0))]
    metrics = long_frame(times + [("teacher:t", 10, "time/diagnostics", 50.0), ("main", 10, "throughput/samples_per_s",
                                                                               900.0)])
    assert dc.probe_share(metrics) == pytest.approx(0.1)
    assert dc.probe_share(METRICS) is None  # no step time logged
    assert dc.probe_interval(dc.diag_frame(METRICS)) == PROBE_EVERY
    assert dc.probe_interval(dc.diag_frame(METRICS[METRICS["step"] == 0])) is None


def test_heatmaps_are_diverging_around_zero_with_red_the_harmful_end() -> None:
    diag = dc.diag_frame(METRICS)
    cos = dc.heatmap_figure(dc.measure_matrix(diag, "cos_val", PATHS), "cos_val")
    (trace,) = cos.data
    assert trace.zmid == 0 and (trace.zmin, trace.zmax) == (-1, 1) and not trace.reversescale
    assert list(trace.y) == PATHS and list(trace.x) == PROBE_STEPS
    np.testing.assert_allclose(trace.z[1], [measured(1, n)["cos_val"] for n in range(len(PROBE_STEPS))])
    assert cos.layout.xaxis.title.text == "training step (probe)" and cos.layout.yaxis.autorange == "reversed"
    # RdBu runs red -> blue: a positive effect raises validation loss, so its scale is reversed.
    effect = dc.heatmap_figure(dc.measure_matrix(diag, "effect", PATHS), "effect")
    (trace,) = effect.data
    assert trace.reversescale and trace.zmin is None and trace.zmid == 0
    assert trace.colorbar.title.text == "Δ val loss<br>(nats)" and ".2e" in trace.hovertemplate
    assert effect.layout.title.text.startswith("Measured effect: change of validation loss")
    (old,) = dc.heatmap_figure(dc.measure_matrix(dc.diag_frame(OLD_METRICS), "lookahead", PATHS), "lookahead").data
    assert old.reversescale and list(old.y) == PATHS


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
