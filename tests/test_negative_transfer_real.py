"""The planted-defect demo (assets/configs/digits_planted.yaml) trained here and drawn by the Negative transfer page.

The synthetic page tests pin the drawing; this checks the whole chain: the probe's verdicts on a
real run with a label-permuted teacher are what the page shows. Training takes a minute or two.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from app.diagnostics_charts import HEATMAPS
from engine.reporting import StoreReporter
from engine.runner import execute_run
from engine.spec import load_spec, spec_to_yaml
from engine.store import Store, init_workspace
from page_helpers import decode, figure_titled, open_page
from tests.conftest import ROOT

PLANTED = ROOT / "assets" / "configs" / "digits_planted.yaml"


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = init_workspace(tmp_path_factory.mktemp("planted") / "ws")
    spec = load_spec(PLANTED)
    with closing(Store(home)) as store:
        run_id = store.create_run(spec_to_yaml(spec), spec.name)
        store.claim_run("test", run_id)
        reporter = StoreReporter(store, run_id)
        result = execute_run(spec, run_id, home, reporter)
        reporter.flush()
        store.finish_run(run_id, "done", result=result)
    return home, run_id


@pytest.fixture
def page(planted_run, monkeypatch: pytest.MonkeyPatch):
    home, run_id = planted_run
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    return open_page("negative_transfer", selected_run=run_id)


def test_the_page_flags_exactly_the_permuted_teachers_paths(page, planted_run) -> None:
    table = next(d.value for d in page.dataframe if "mean_cos_task" in d.value.columns)
    paths = table["path"].tolist()
    assert paths == [p.id for p in load_spec(PLANTED).paths]
    hurting = {pid for pid, verdict in zip(paths, table["verdict"]) if verdict == ["hurts"]}
    assert hurting == {pid for pid in paths if pid.startswith("permuted-")}
    assert table.loc[table["path"].isin(hurting), "first_flag_step"].notna().all()


def test_the_heatmap_draws_the_real_probe_values(page, planted_run) -> None:
    home, run_id = planted_run
    (trace,) = figure_titled(page, HEATMAPS["cos_val"].title)["data"]
    with closing(Store(home, readonly=True)) as store:
        for row, pid in enumerate(trace["y"]):
            stored = store.metrics(run_id, keys=[f"diag/cos_val:{pid}"], phase="main")
            np.testing.assert_allclose(np.asarray(decode(trace["z"]))[row], [r["value"] for r in stored])
