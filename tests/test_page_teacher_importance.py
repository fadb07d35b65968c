"""The Teacher importance page (AppTest through app/main.py) on synthetic runs: AMTML-KD's per-instance teacher
weights on the simplex or as stacked bars, SAKD's spot fractions, DFA's alpha heatmaps, and its empty states."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from app.colors import TEACHER_PALETTE
from engine.store import Store, StoredArray
from page_helpers import decode, figure_titled, open_page, texts, traces_of
from synthetic_runs import (
    DFA_GROUPS, DFA_SEARCH_STEPS, SAKD_SPOTS, TELEMETRY_STEPS, add_finished_run, amtml_arrays, dfa_arrays,
    dfa_search_metrics, legacy_spec_yaml, sakd_arrays,
)


def stored(workspace: Path, run_id: str, key: str, phase: str = "main") -> list[StoredArray]:
    with closing(Store(workspace, readonly=True)) as store:
        return store.arrays(run_id, key, phase=phase)


def test_teacher_importance_puts_three_teachers_on_the_simplex(workspace: Path) -> None:
    teachers = ("t", "wide", "deep")
    run_id = add_finished_run(workspace, "amtml", method="amtml", weighting="fixed", teacher_ids=teachers,
                              arrays=amtml_arrays(teachers))
    at = open_page("teacher_importance", selected_run=run_id)
    assert at.title[0].value == "Teacher importance"
    assert not at.error and not at.info, texts(at.info)
    recorded = {a.step: a for a in stored(workspace, run_id, "amtml/teacher_weights")}
    for step in (TELEMETRY_STEPS[-1], TELEMETRY_STEPS[1]):  # the newest step by default, then a chosen one
        if step != TELEMETRY_STEPS[-1]:
            at.select_slider(key=f"amtml-step-{run_id}").set_value(step).run()
        expected = dict(zip(recorded[step].index.tolist(), recorded[step].values.tolist()))
        drawn = {}
        for trace in traces_of(at, "scatterternary"):
            columns = zip(decode(trace["customdata"]), decode(trace["a"]), decode(trace["b"]), decode(trace["c"]))
            drawn.update({sample: list(abc) for sample, *abc in columns})
        assert drawn.keys() == expected.keys()
        for sample, weights in expected.items():
            assert drawn[sample] == pytest.approx(weights, abs=1e-6)
    ternary = figure_titled(at, "Per-instance teacher weights")["layout"]["ternary"]
    for axis, teacher, color in zip(("aaxis", "baxis", "caxis"), teachers, TEACHER_PALETTE):
        assert teacher in ternary[axis]["title"]["text"] and ternary[axis]["title"]["font"]["color"] == color
    theta = {t["name"]: t for t in figure_titled(at, "Teacher latent vectors")["data"]}
    norms = stored(workspace, run_id, "amtml/theta_norm")
    assert decode(theta["deep"]["y"]) == pytest.approx([a.values[0, 2] for a in norms])
    assert len(at.get("image")) == 12  # the gallery: a picture per sample, from the digits dataset


def test_teacher_importance_draws_two_teachers_as_stacked_bars(workspace: Path) -> None:
    teachers = ("small", "big")
    # stored before the weighting/method split: a version-1 spec with aggregator amtml
    run_id = add_finished_run(workspace, "amtml2", teacher_ids=teachers, arrays=amtml_arrays(teachers),
                              stored_spec=legacy_spec_yaml("amtml2", "amtml"))
    at = open_page("teacher_importance", selected_run=run_id)
    assert not traces_of(at, "scatterternary")
    last = stored(workspace, run_id, "amtml/teacher_weights")[-1]
    expected = dict(zip(last.index.tolist(), last.values.tolist()))
    bars = {t["name"]: t for t in figure_titled(at, "Per-instance teacher weights")["data"]}
    assert list(bars) == list(teachers)
    for m, teacher in enumerate(teachers):
        assert bars[teacher]["orientation"] == "h"
        samples = [int(label.rsplit("#", 1)[1]) for label in bars[teacher]["y"]]
        assert sorted(samples) == sorted(expected)
        assert decode(bars[teacher]["x"]) == pytest.approx([expected[s][m] for s in samples], abs=1e-6)


def test_teacher_importance_shows_sakd_spot_fractions(workspace: Path) -> None:
    run_id = add_finished_run(workspace, "sakd", method="sakd", weighting="fixed", arrays=sakd_arrays())
    at = open_page("teacher_importance", selected_run=run_id)
    assert not at.error
    decisions = stored(workspace, run_id, "sakd/decisions")
    lines = {t["name"]: t for t in figure_titled(at, "Fraction distilled per spot")["data"]}
    assert list(lines) == SAKD_SPOTS
    for j, spot in enumerate(SAKD_SPOTS):
        assert decode(lines[spot]["x"]) == TELEMETRY_STEPS
        assert decode(lines[spot]["y"]) == pytest.approx([float(a.values[:, j].mean()) for a in decisions])
    (decision_map,) = figure_titled(at, "Routing decisions at step")["data"]
    assert np.array(decode(decision_map["z"])).sum() == decisions[-1].values.sum()
    assert decision_map["x"] == SAKD_SPOTS
    (use,) = figure_titled(at, "Spot use by class")["data"]
    assert np.array(decode(use["z"])).shape == (len(set(np.concatenate(
        [a.values for a in stored(workspace, run_id, "labels")]))), len(SAKD_SPOTS))


def test_teacher_importance_shows_dfa_alpha_heatmaps(workspace: Path) -> None:
    run_id = add_finished_run(workspace, "dfa", method="dfa", weighting="fixed", arrays=dfa_arrays(),
                              extra_metrics=dfa_search_metrics())
    at = open_page("teacher_importance", selected_run=run_id)
    assert not at.error
    for group, blocks in DFA_GROUPS.items():
        (heatmap,) = figure_titled(at, f"α of layer group {group}")["data"]
        alphas = np.concatenate([a.values for a in stored(workspace, run_id, f"dfa/alpha:{group}", "search")])
        assert heatmap["y"] == blocks
        assert decode(heatmap["x"]) == DFA_SEARCH_STEPS
        assert np.array(decode(heatmap["z"])) == pytest.approx(alphas.T, abs=1e-6)
    bridge = {t["name"] for t in figure_titled(at, "Bridge losses")["data"]}
    assert bridge == {"L_TS (teacher → student)", "L_ST (student → teacher)"}
    entropy = {t["name"] for t in figure_titled(at, "α entropy")["data"]}
    assert entropy == set(DFA_GROUPS)


def test_teacher_importance_names_the_plugins_that_record_weights(finished_run: str) -> None:
    at = open_page("teacher_importance", selected_run=finished_run)
    message = texts(at.info)
    assert "This run's combination (equal) records no per-instance weights: run " in message
    assert all(name in message for name in ("amtml", "dfa", "sakd"))
    assert not at.get("plotly_chart")
    assert [link.proto.label for link in at.get("page_link")] == ["Configure a run"]


def test_teacher_importance_opens_on_the_newest_run_that_records_weights(workspace: Path) -> None:
    teachers = ("t", "wide")
    amtml = add_finished_run(workspace, "amtml", method="amtml", weighting="fixed", teacher_ids=teachers,
                             arrays=amtml_arrays(teachers))
    newest = add_finished_run(workspace, "plain kd")  # records nothing this page draws
    at = open_page("teacher_importance")  # no run picked in this session, no link
    assert amtml in at.selectbox[0].value and not at.info
    at = open_page("teacher_importance", selected_run=newest)  # a pick (on Live, say) is kept
    assert newest in at.selectbox[0].value


def test_teacher_importance_waits_for_the_first_telemetry(workspace: Path) -> None:
    run_id = add_finished_run(workspace, "amtml-early", method="amtml", weighting="fixed")
    at = open_page("teacher_importance", selected_run=run_id)
    assert "No telemetry recorded yet: amtml records" in texts(at.info)
    assert not at.get("page_link")  # it records, later: nothing to configure


def test_teacher_importance_without_the_dataset_still_draws_the_weights(workspace: Path, tmp_path: Path) -> None:
    teachers = ("a", "b", "c")
    run_id = add_finished_run(workspace, "no-data", method="amtml", weighting="fixed", teacher_ids=teachers,
                              arrays=amtml_arrays(teachers), dataset={"name": "mnist", "root": str(tmp_path / "none")})
    at = open_page("teacher_importance", selected_run=run_id)
    assert "Sample pictures are not shown: the dataset 'mnist' cannot be loaded here" in texts(at.info)
    assert traces_of(at, "scatterternary") and not at.get("image")
