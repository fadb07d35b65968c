"""Where runs execute, on the pages: placement on Live and Compare, Home's cluster panel, Configure's Ray launch."""
from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from app.cluster import cluster_summary
from engine.store import Store
from synthetic_runs import add_finished_run
from tests.page_helpers import button, open_page, texts

RAY_PLACEMENT = {"executor": "ray", "node": "gpu-node-2", "ip": "10.0.0.2", "devices": "cuda:0", "pid": 4242,
                 "trial_id": "abc_00001", "address": "10.0.0.1:6379", "storage": "/shared/ws"}
UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing answers there


def ray_runs(workspace: Path) -> tuple[str, str]:
    """A Ray run whose trial runs on gpu-node-2, and one still waiting for a slot."""
    with closing(Store(workspace)) as store:
        spec_yaml = store.get_run(add_finished_run(workspace)).spec_yaml
        running = store.create_run(spec_yaml, "on ray", placement={"executor": "ray", "address": "10.0.0.1:6379"})
        waiting = store.create_run(spec_yaml, "waiting", placement={"executor": "ray", "address": "10.0.0.1:6379"})
        # a fresh heartbeat, as a live driver's: the pages mark a running run without one interrupted
        store.con.execute("UPDATE runs SET status='running', started_at=created_at, heartbeat_at=? WHERE id IN (?, ?)",
                          (time.time() + 3600, running, waiting))
        store.con.commit()
        store.set_placement(running, RAY_PLACEMENT)
    return running, waiting


def test_the_summary_counts_ray_trials_by_whether_they_started(workspace: Path) -> None:
    ray_runs(workspace)
    with closing(Store(workspace, readonly=True)) as store:
        summary = cluster_summary(store)
    assert (summary.ray_running, summary.ray_queued) == (1, 1)
    assert summary.nodes.to_dict("records") == [{"node": "gpu-node-2 (10.0.0.2)", "executor": "ray", "running": 1,
                                                 "devices": "cuda:0"}]
    assert summary.addresses == ["10.0.0.1:6379"]


def test_live_and_compare_say_where_a_run_executes(workspace: Path) -> None:
    running, waiting = ray_runs(workspace)
    at = open_page("live", selected_run=running)
    assert "Runs on ray · gpu-node-2 (10.0.0.2) · cuda:0" in texts(at.caption)
    at = open_page("compare")
    table = at.dataframe[0].value
    assert table.loc[table["id"] == running, "runs_on"].item() == "ray · gpu-node-2 (10.0.0.2) · cuda:0"
    assert table.loc[table["id"] == waiting, "runs_on"].item() == "ray · waiting for a slot on 10.0.0.1:6379"


def test_home_shows_the_cluster_and_an_unreachable_one_in_one_line(workspace: Path) -> None:
    ray_runs(workspace)
    at = open_page("home")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ray trials running"] == "1" and metrics["Ray trials waiting"] == "1"
    assert "10.0.0.1:6379" in texts(at.caption)
    next(t for t in at.text_input if t.label == "Ray address").input(UNREACHABLE).run()
    button(at, "Ask the cluster").click().run()
    assert not at.exception
    assert f"nothing answers at {UNREACHABLE}" in texts(at.error)


def test_home_says_what_to_do_when_nothing_runs(workspace: Path) -> None:
    at = open_page("home")
    assert "Nothing is running" in texts(at.info)


def test_configure_refuses_an_unreachable_ray_cluster_and_queues_nothing(workspace: Path) -> None:
    at = open_page("configure")
    at.multiselect(key="cfg0.cmp.weightings").set_value(["equal"]).run()
    at.radio(key="cfg0.cmp.executor").set_value("Ray cluster").run()
    at.text_input(key="cfg0.cmp.ray_address").input(UNREACHABLE).run()
    button(at, "Launch comparison").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Not launched on Ray" in texts(at.error) and f"nothing answers at {UNREACHABLE}" in texts(at.error)
    with closing(Store(workspace, readonly=True)) as store:
        assert store.list_runs() == []
