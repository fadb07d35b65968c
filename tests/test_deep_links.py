"""Deep links (AppTest): a page that shows a run takes it from the URL and writes its selection back; Compare keeps
its filters and selected runs in the URL, so the link opens the same view in another session; unknown and forged
ids give a warning naming them and the page's default, never a crash."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import catalog
from engine.store import Store
from synthetic_runs import add_finished_run
from tests.page_helpers import MAIN, TIMEOUT_S, page, texts

FORGED = ["../../etc", "20990101-000000-dead", "`x`](javascript:alert(1))"]


def open_link(name: str, **params: str) -> AppTest:
    """A new session (another browser) opening the page's URL with ``params``."""
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    at.run()
    at.query_params.update(params)
    at.switch_page(page(name)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def two_runs(workspace: Path) -> tuple[str, str]:
    """(older, newer): the pages default to the newer."""
    return add_finished_run(workspace, "older"), add_finished_run(workspace, "newer")


@pytest.mark.parametrize("name", ["live", "negative_transfer"])
def test_a_run_link_opens_that_run_and_a_new_pick_is_written_back(two_runs: tuple[str, str], name: str) -> None:
    older, newer = two_runs
    at = open_link(name, run=older)
    assert at.selectbox[0].value == older
    assert not at.warning
    at.selectbox[0].set_value(newer).run()
    assert at.query_params["run"] == newer
    assert at.session_state["selected_run"] == newer


@pytest.mark.parametrize("forged", FORGED)
def test_an_unknown_or_forged_run_id_warns_and_shows_the_newest(two_runs: tuple[str, str], forged: str) -> None:
    older, newer = two_runs
    at = open_link("live", run=forged)
    assert at.selectbox[0].value == newer
    warning = texts(at.warning)
    assert "not in this workspace" in warning and forged.replace("`", "'") in warning
    assert at.query_params["run"] == newer  # the link now names what is shown
    assert not at.error


def test_a_filtered_compare_view_opens_the_same_in_another_session(workspace: Path) -> None:
    runs = {name: add_finished_run(workspace, name, weighting=weighting)
            for name, weighting in [("a-equal", "equal"), ("b-fixed", "fixed"), ("c-fixed", "fixed"),
                                    ("d-fixed", "fixed")]}
    with closing(Store(workspace)) as store:
        for name in ("a-equal", "b-fixed", "c-fixed"):
            catalog.set_tags(store, runs[name], add=["paper"])
    at = open_link("compare")
    at.multiselect(key="cmp_tags").set_value(["paper"]).run()
    at.multiselect(key="cmp_weightings").set_value(["fixed"]).run()
    at.text_input(key="cmp_q").input("fixed").run()
    at.multiselect(key="cmp_runs").set_value([runs["b-fixed"]]).run()
    link = dict(at.query_params)
    assert link["tag"] == "paper" and link["weighting"] == "fixed" and link["runs"] == runs["b-fixed"]

    other = open_link("compare", **link)
    assert other.dataframe[0].value["id"].tolist() == [runs["c-fixed"], runs["b-fixed"]]
    assert other.multiselect(key="cmp_runs").value == [runs["b-fixed"]]
    assert other.text_input(key="cmp_q").value == "fixed"
    assert not other.warning


def test_compare_links_name_unknown_runs_and_filter_values_and_keep_the_known_ones(two_runs: tuple[str, str]) -> None:
    older, newer = two_runs
    at = open_link("compare", runs=f"../../etc,{older}", tag="no-such-tag", sort="name;drop")
    assert at.multiselect(key="cmp_runs").value == [older]
    warnings = texts(at.warning)
    assert "run `../../etc`" in warnings and "tag filter value `no-such-tag`" in warnings
    assert "sort key `name;drop`" in warnings
    assert at.dataframe[0].value["id"].tolist() == [newer, older]  # unfiltered, newest first
    assert at.query_params["runs"] == older and "tag" not in at.query_params and "sort" not in at.query_params


def test_a_group_link_opens_that_group(workspace: Path) -> None:
    add_finished_run(workspace, "first", group_id="cmp-a")
    add_finished_run(workspace, "second", group_id="cmp-b")
    at = open_link("compare", group="cmp-a")
    assert at.selectbox(key="cmp_group").value == "cmp-a"
    at.selectbox(key="cmp_group").set_value("cmp-b").run()
    assert at.query_params["group"] == "cmp-b"
    forged = open_link("compare", group="../cmp-a")
    assert forged.selectbox(key="cmp_group").value == "cmp-b"  # the newest group
    assert "`../cmp-a`" in texts(forged.warning)
