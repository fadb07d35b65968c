"""The Attribution page on a real tiny digits run: it submits the explain jobs, which run here in-process
(as a worker would), and draws what they stored."""
from __future__ import annotations

import json
import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from page_helpers import button, decode, open_page

from app import attribution_charts as ac
from engine.jobs import execute_job
from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, init_workspace
from engine.worker import execute_claimed

SPEC = {
    "name": "attr-tiny",
    "dataset": {"name": "digits", "batch_size": 64, "train_size": 400},
    "teachers": [{"id": "wide", "arch": "small_cnn", "arch_params": {"width": 8}, "source": {"kind": "train", "epochs": 2}},
                 {"id": "narrow", "arch": "small_cnn", "arch_params": {"width": 4}, "source": {"kind": "train", "epochs": 1}}],
    "student": {"arch": "small_cnn", "arch_params": {"width": 4}},
    "paths": [{"id": "wide-kd", "teacher": "wide", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
              {"id": "narrow-kd", "teacher": "narrow", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
    "epochs": 2,
    "seed": 0,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = init_workspace(tmp_path_factory.mktemp("attribution") / "ws")
    with closing(Store(home)) as store:
        spec = parse_spec(SPEC)
        run_id = store.create_run(spec_to_yaml(spec), spec.name)
        assert execute_claimed(store, store.claim_run("test", run_id), threading.Event()) is not None, \
            store.get_run(run_id).error
    return home, run_id


@pytest.fixture
def workspace(trained, monkeypatch: pytest.MonkeyPatch) -> Path:
    home, _ = trained
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    return home


def jobs(home: Path, run_id: str, kind: str):
    with closing(Store(home, readonly=True)) as store:
        return store.list_jobs(run_id, kind)


def run_queued(home: Path) -> list:
    """Execute every queued job, as a worker would; return their results."""
    results = []
    with closing(Store(home)) as store:
        while (job := store.claim_job("test")) is not None:
            result = execute_job(store, job)
            assert result is not None, store.get_job(job.id).error
            results.append(result)
    return results


def figures(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_attribution_page_end_to_end(workspace: Path, trained) -> None:
    home, run_id = trained
    at = open_page("attribution", selected_run=run_id)
    # First open: the sample index is submitted and its progress shown.
    (index_job,) = jobs(home, run_id, "sample_index")
    assert index_job.status == "queued" and index_job.params == {"checkpoint": "final"}
    assert run_queued(home)

    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(jobs(home, run_id, "sample_index")) == 1  # not resubmitted
    samples = next(m for m in at.multiselect if m.label == "Samples")
    options = [int(str(o).split(" ")[0].lstrip("#")) for o in samples.options]
    picked = options[:2]
    samples.set_value(picked)
    next(s for s in at.selectbox if s.label == "Method").set_value("saliency")
    at.run()
    button(at, "Explain the selected samples").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (explain_job,) = jobs(home, run_id, "explain")
    assert explain_job.params["method"] == "saliency"
    assert explain_job.params["samples"] == picked
    assert explain_job.params["checkpoint"] == "final"
    (result,) = run_queued(home)

    at.run()
    assert not at.exception, [e.value for e in at.exception]
    overlays = [t for fig in figures(at) for t in fig["data"]
                if t.get("type") == "heatmap" and t.get("meta", {}).get("model") in result["models"]]
    assert len(overlays) == len(picked) * len(result["models"])
    expected = {(item["sample"], item["model"]): ac.caption(item["predicted"], item["confidence"])
                for item in result["items"]}
    drawn = {(t["meta"]["sample"], t["meta"]["model"]): t["meta"]["caption"] for t in overlays}
    assert drawn == expected
    # Captions are written under the maps (x-axis titles), columns: input, teachers in spec order, student.
    first = figures(at)[0]
    titles = [a["text"] for a in first["layout"]["annotations"]]
    assert titles[:4] == ["input", "wide", "narrow", "student"]
    axis_titles = [first["layout"][f"xaxis{n}"]["title"]["text"] for n in (2, 3, 4)]
    sample = first["data"][0]["meta"]["sample"]
    assert axis_titles == [expected[(sample, m)] for m in ("teacher:wide", "teacher:narrow", "student")]
    # One shared colour scale per row: bounded by the row's largest |map|.
    assert first["layout"]["coloraxis"]["cmax"] == pytest.approx(
        max(np.abs(np.asarray(decode_z(t))).max() for t in first["data"] if t.get("coloraxis")), rel=1e-6)

    # Agreement over checkpoints.
    button(at, "Compute agreement over checkpoints").click().run()
    (agreement_job,) = jobs(home, run_id, "agreement")
    assert agreement_job.params["method"] == "occlusion"
    run_queued(home)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    with closing(Store(home, readonly=True)) as store:
        stored = pd.DataFrame([tuple(r) for r in store.metrics(run_id, phase="explain")],
                              columns=["phase", "step", "epoch", "key", "value"])
    for prefix, title in (("agree/spearman:", "Spearman"), ("agree/topk:", "top-k")):
        fig = next(f for f in figures(at) if title in f["layout"].get("title", {}).get("text", ""))
        lines = {t["name"]: t for t in fig["data"]}
        assert set(lines) == {"wide", "narrow"}
        for tid, line in lines.items():
            series = stored[stored["key"] == prefix + tid].sort_values("step")
            assert decode(line["x"]) == series["epoch"].tolist()
            assert decode(line["y"]) == pytest.approx(series["value"].tolist())


def decode_z(trace: dict) -> list:
    z = trace["z"]
    return decode(z) if isinstance(z, dict) else z


def test_class_and_misclassified_filters(workspace: Path, trained) -> None:
    home, run_id = trained
    at = open_page("attribution", selected_run=run_id)
    run_queued(home)
    at.run()
    next(s for s in at.selectbox if s.label == "Class").set_value(3).run()
    listed = next(m for m in at.multiselect if m.label == "Samples").options
    assert listed and all(" label 3 " in str(o) for o in listed)
    assert not at.exception, [e.value for e in at.exception]


def test_filter_samples_and_row_scale() -> None:
    table = ac.sample_table({"sample": np.array([4, 1, 2]), "label": np.array([0, 1, 0]),
                             "student_pred": np.array([0, 0, 1]), "student_conf": np.array([0.9, 0.6, 0.5]),
                             "disagreement": np.array([0.1, 0.4, 0.3])})
    assert ac.filter_samples(table, None, False, "sample id")["sample"].tolist() == [1, 2, 4]
    assert ac.filter_samples(table, None, True, "highest teacher disagreement")["sample"].tolist() == [1, 2]
    assert ac.filter_samples(table, 0, False, "highest teacher disagreement")["sample"].tolist() == [2, 4]
    assert ac.row_scale([np.full((1, 2, 2), -3.0), np.ones((1, 2, 2))]) == 3.0
    assert ac.row_scale([np.zeros((1, 2, 2))]) == 1.0


def test_run_without_checkpoints_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthetic_runs import add_finished_run
    home = tmp_path / "ws"
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    run_id = add_finished_run(home)
    at = open_page("attribution", selected_run=run_id)
    assert "no saved checkpoint" in "\n".join(str(i.value) for i in at.info)
    assert not jobs(home, run_id, "sample_index")
