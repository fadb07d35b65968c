"""Compare's run table through the page (AppTest): search and filters narrow it, tags, notes, archive and delete
written from the page land in the store, refusals are shown as messages; Home lists the newest runs."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from engine import catalog
from engine.store import Store
from engine.workspace import run_dir
from synthetic_runs import add_finished_run, spec_yaml
from app.widgets import ALL_ARCHIVED_MESSAGE, EMPTY_RUNS_MESSAGE
from tests.page_helpers import ROOT, button, open_page, texts


def table_ids(at: AppTest) -> list[str]:
    """The run ids of Compare's run table (the page's first dataframe), in the order shown."""
    return at.dataframe[0].value["id"].tolist()


def entry(home: Path, run_id: str, archived: bool = False) -> catalog.RunEntry:
    with closing(Store(home, readonly=True)) as store:
        return next(e for e in catalog.run_table(store, catalog.RunFilter(archived=archived)) if e.run_id == run_id)


def select(at: AppTest, *run_ids: str) -> AppTest:
    return at.multiselect(key="cmp_runs").set_value(list(run_ids)).run()


@pytest.fixture
def three_runs(workspace: Path) -> dict[str, str]:
    """Three finished runs of different weightings, the last two in one group; created oldest first."""
    return {
        "alpha": add_finished_run(workspace, "alpha", weighting="equal", result={"test_acc": 0.81}),
        "beta": add_finished_run(workspace, "beta", weighting="fixed", group_id="cmp-1", result={"test_acc": 0.92}),
        "gamma": add_finished_run(workspace, "gamma", weighting="uncertainty", group_id="cmp-1",
                                  result={"test_acc": 0.65}),
    }


def test_search_filters_and_sorting_narrow_and_order_the_table(three_runs: dict[str, str]) -> None:
    at = open_page("compare")
    assert table_ids(at) == [three_runs["gamma"], three_runs["beta"], three_runs["alpha"]]  # newest first
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[three_runs["beta"], "final_acc_pct"] == pytest.approx(92.0)
    assert table.loc[three_runs["beta"], "group_id"] == "cmp-1"

    at.text_input(key="cmp_q").input("BET").run()
    assert table_ids(at) == [three_runs["beta"]]
    at.text_input(key="cmp_q").input("").run()
    at.multiselect(key="cmp_weightings").set_value(["fixed", "uncertainty"]).run()
    assert table_ids(at) == [three_runs["gamma"], three_runs["beta"]]
    at.selectbox(key="cmp_sort").set_value("final_acc").run()
    assert table_ids(at) == [three_runs["beta"], three_runs["gamma"]]  # best final accuracy first
    at.toggle(key="cmp_ascending").set_value(True).run()
    assert table_ids(at) == [three_runs["gamma"], three_runs["beta"]]
    assert not at.exception


def test_a_filter_that_matches_nothing_offers_to_clear_it(three_runs: dict[str, str]) -> None:
    at = open_page("compare")
    at.text_input(key="cmp_q").input("no-such-run").run()
    assert "No run matches the search and filters." in texts(at.info)
    assert not at.dataframe
    button(at, "Clear search and filters").click().run()
    assert len(table_ids(at)) == 3


def test_tags_written_from_the_page_land_in_the_store_and_filter_the_table(workspace: Path,
                                                                          three_runs: dict[str, str]) -> None:
    at = select(open_page("compare"), three_runs["alpha"], three_runs["beta"])
    at.text_input(key="cmp_run_tag_add").input("baseline, seed:1").run()
    next(b for b in at.button if b.key == "cmp_run_tag_apply").click().run()
    assert not at.exception and not at.error
    for name in ("alpha", "beta"):
        assert set(entry(workspace, three_runs[name]).tags) == {"baseline", "seed:1"}
    assert entry(workspace, three_runs["gamma"]).tags == ()

    at.multiselect(key="cmp_tags").set_value(["baseline"]).run()
    assert table_ids(at) == [three_runs["beta"], three_runs["alpha"]]
    assert at.query_params["tag"] == "baseline"

    select(at, three_runs["beta"])
    at.multiselect(key="cmp_run_tag_remove").set_value(["seed:1"]).run()
    next(b for b in at.button if b.key == "cmp_run_tag_apply").click().run()
    assert entry(workspace, three_runs["beta"]).tags == ("baseline",)
    assert entry(workspace, three_runs["alpha"]).tags == ("baseline", "seed:1")


@pytest.mark.parametrize("bad", ["my tag", "x" * 200])
def test_a_bad_tag_is_named_and_nothing_is_written(workspace: Path, three_runs: dict[str, str], bad: str) -> None:
    at = select(open_page("compare"), three_runs["alpha"])
    at.text_input(key="cmp_run_tag_add").input(f"good, {bad}").run()
    next(b for b in at.button if b.key == "cmp_run_tag_apply").click().run()
    assert not at.exception
    assert bad[:40] in texts(at.error)
    assert entry(workspace, three_runs["alpha"]).tags == ()  # not even the valid tag before it


def test_a_note_written_from_the_page_is_stored_and_rendered(workspace: Path, three_runs: dict[str, str]) -> None:
    run_id = three_runs["beta"]
    at = select(open_page("compare"), run_id)
    note = "Seed variance explains **the 0.4 point gap**."
    at.text_area(key=f"cmp_note_run_{run_id}").input(note).run()
    button(at, "Save note").click().run()
    with closing(Store(workspace, readonly=True)) as store:
        assert catalog.note_of(store, "run", run_id) == note
    assert note in texts(at.markdown)
    at.text_input(key="cmp_q").input("0.4 point").run()  # the search reaches notes
    assert table_ids(at) == [run_id]


def test_a_note_saved_elsewhere_meanwhile_is_not_overwritten_without_a_second_save(
        workspace: Path, three_runs: dict[str, str]) -> None:
    run_id = three_runs["beta"]
    at = select(open_page("compare"), run_id)
    at.text_area(key=f"cmp_note_run_{run_id}").input("mine").run()
    with closing(Store(workspace)) as store:  # another tab saves first
        catalog.set_note(store, "run", run_id, "theirs")
    button(at, "Save note").click().run()
    assert "someone saved it since you opened it" in texts(at.error)
    assert "theirs" in texts(at.markdown) and at.text_area(key=f"cmp_note_run_{run_id}").value == "mine"
    with closing(Store(workspace, readonly=True)) as store:
        assert catalog.note_of(store, "run", run_id) == "theirs"
    button(at, "Save note").click().run()  # seen, and replaced on purpose
    with closing(Store(workspace, readonly=True)) as store:
        assert catalog.note_of(store, "run", run_id) == "mine"


def test_a_note_blanked_then_written_again_saves_without_a_conflict(workspace: Path,
                                                                    three_runs: dict[str, str]) -> None:
    run_id = three_runs["alpha"]
    at = select(open_page("compare"), run_id)
    for text in ("first", " \n", "again"):  # the blank save removes the note: what the editor read is "" then
        at.text_area(key=f"cmp_note_run_{run_id}").input(text).run()
        button(at, "Save note").click().run()
        assert not at.error, text
    with closing(Store(workspace, readonly=True)) as store:
        assert catalog.note_of(store, "run", run_id) == "again"


def test_a_note_of_a_megabyte_is_refused(workspace: Path, three_runs: dict[str, str]) -> None:
    run_id = three_runs["alpha"]
    at = select(open_page("compare"), run_id)
    at.text_area(key=f"cmp_note_run_{run_id}").input("x" * 1_000_000).run()
    button(at, "Save note").click().run()
    assert not at.exception
    assert f"Note of run {run_id}" in texts(at.error)
    with closing(Store(workspace, readonly=True)) as store:
        assert catalog.note_of(store, "run", run_id) == ""


def test_a_group_note_and_tags_are_saved_from_the_group_view(workspace: Path, three_runs: dict[str, str]) -> None:
    at = open_page("compare")
    assert at.selectbox(key="cmp_group").value == "cmp-1"
    at.text_area(key="cmp_note_group_cmp-1").input("Fixed beats uncertainty here.").run()
    next(b for b in at.button if b.key == "cmp_note_save_group_cmp-1").click().run()
    at.text_input(key="cmp_group_tag_add").input("sweep-1").run()
    next(b for b in at.button if b.key == "cmp_group_tag_apply").click().run()
    assert not at.error
    with closing(Store(workspace, readonly=True)) as store:
        assert catalog.note_of(store, "group", "cmp-1") == "Fixed beats uncertainty here."
        assert catalog.group_tags(store, "cmp-1") == ("sweep-1",)
        assert entry(workspace, three_runs["beta"]).tags == ()  # the group's tags, not its runs'
    assert "Fixed beats uncertainty here." in texts(at.markdown)
    assert "Tags of group cmp-1: `sweep-1`" in texts(at.caption)
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[three_runs["beta"], "group_tags"] == "sweep-1"
    assert table.loc[three_runs["alpha"], "group_tags"] == ""
    at.multiselect(key="cmp_tags").set_value(["sweep-1"]).run()  # the tag filter finds the group's runs
    assert sorted(table_ids(at)) == sorted([three_runs["beta"], three_runs["gamma"]])


def test_archive_hides_a_run_and_restore_brings_it_back(workspace: Path, three_runs: dict[str, str]) -> None:
    alpha = three_runs["alpha"]
    at = select(open_page("compare"), alpha)
    button(at, "Archive").click().run()
    assert alpha not in table_ids(at)
    assert entry(workspace, alpha, archived=True).archived
    at.toggle(key="cmp_archived").set_value(True).run()
    assert table_ids(at) == [alpha]
    assert at.query_params["archived"] == "1"
    select(at, alpha)
    button(at, "Restore").click().run()
    assert "No archived runs." in texts(at.info)
    at.toggle(key="cmp_archived").set_value(False).run()
    assert alpha in table_ids(at)


def delete_selected(at: AppTest) -> AppTest:
    at.checkbox(key="cmp_delete_ok").check().run()
    return next(b for b in at.button if b.key == "cmp_delete").click().run()


def test_delete_asks_for_confirmation_then_removes_the_run(workspace: Path, three_runs: dict[str, str]) -> None:
    gamma = three_runs["gamma"]
    at = select(open_page("compare"), gamma)
    confirm = at.checkbox(key="cmp_delete_ok")
    assert "gamma" in confirm.label and "cancelled first" in confirm.label
    assert next(b for b in at.button if b.key == "cmp_delete").disabled  # nothing goes before the box is ticked
    at.checkbox(key="cmp_delete_ok").check().run()
    select(at, gamma, three_runs["beta"])
    assert not at.checkbox(key="cmp_delete_ok").value  # ticked for gamma alone: asked again for two runs
    select(at, gamma)
    delete_selected(at)
    assert not at.exception and not at.error
    assert gamma not in table_ids(at)
    assert f"Deleted {gamma}" in texts(at.success)
    assert not run_dir(workspace, gamma).exists()
    with closing(Store(workspace, readonly=True)) as store:
        assert store.get_run(gamma) is None
        assert store.metrics(gamma) == []


def test_a_queued_run_is_cancelled_then_deleted(workspace: Path, three_runs: dict[str, str]) -> None:
    with closing(Store(workspace)) as store:
        queued = store.create_run(spec_yaml("waiting"), name="waiting")
    at = select(open_page("compare"), queued)
    delete_selected(at)
    assert not at.exception and not at.error
    assert queued not in table_ids(at)
    with closing(Store(workspace, readonly=True)) as store:
        assert store.get_run(queued) is None


def test_a_second_delete_of_the_same_run_says_it_is_gone(workspace: Path, three_runs: dict[str, str]) -> None:
    """Two browsers: the other one deleted the run after this page listed it."""
    alpha = three_runs["alpha"]
    at = select(open_page("compare"), alpha)
    catalog.delete_run(workspace, alpha)
    delete_selected(at)
    assert not at.exception
    assert f"run {alpha} does not exist" in texts(at.error)


def test_a_run_other_runs_depend_on_is_not_deleted(workspace: Path, three_runs: dict[str, str]) -> None:
    teacher_run = three_runs["alpha"]
    spec = yaml.safe_load(spec_yaml("student-of-alpha"))
    spec["teachers"][0]["source"] = {"kind": "run", "run_id": teacher_run}
    dependant = add_finished_run(workspace, "student-of-alpha", stored_spec=yaml.safe_dump(spec))
    at = select(open_page("compare"), teacher_run)
    delete_selected(at)
    assert not at.exception
    assert dependant in texts(at.error)
    assert run_dir(workspace, teacher_run).exists()
    assert teacher_run in table_ids(at)


def test_home_lists_the_newest_runs_but_not_archived_ones(workspace: Path, three_runs: dict[str, str]) -> None:
    with closing(Store(workspace)) as store:
        catalog.archive(store, three_runs["beta"])
    at = open_page("home")
    assert table_ids(at) == [three_runs["gamma"], three_runs["alpha"]]
    assert {"final_acc_pct", "tags"} <= set(at.dataframe[0].value.columns)


@pytest.mark.parametrize("name", ["live", "negative_transfer", "teacher_importance", "attribution"])
def test_run_pickers_leave_archived_runs_out(workspace: Path, three_runs: dict[str, str], name: str) -> None:
    with closing(Store(workspace)) as store:
        catalog.archive(store, three_runs["gamma"])
    at = open_page(name)
    assert at.selectbox[0].options and all(three_runs["gamma"] not in option for option in at.selectbox[0].options)
    assert any(three_runs["beta"] in option for option in at.selectbox[0].options)


def test_a_linked_archived_run_and_an_archived_active_run_stay_pickable(workspace: Path,
                                                                          three_runs: dict[str, str]) -> None:
    with closing(Store(workspace)) as store:
        active = store.create_run(spec_yaml("still queued", "equal"), name="still queued")
        for run_id in (three_runs["alpha"], active):
            catalog.archive(store, run_id)
    at = open_page("live")  # queued: Live is where it is watched and cancelled
    assert any(active in option for option in at.selectbox[0].options)
    assert all(three_runs["alpha"] not in option for option in at.selectbox[0].options)
    at = open_page("attribution")  # elsewhere an archived run is out, queued or not
    assert all(active not in option for option in at.selectbox[0].options)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=180)
    at.query_params["run"] = three_runs["alpha"]  # a link shared before the run was archived
    at.run()
    at.switch_page(str(ROOT / "pages" / "live.py")).run()
    assert three_runs["alpha"] in at.selectbox[0].value and not at.warning


def test_a_workspace_of_archived_runs_says_how_to_restore_one(workspace: Path, three_runs: dict[str, str]) -> None:
    with closing(Store(workspace)) as store:
        for run_id in three_runs.values():
            catalog.archive(store, run_id)
    for name in ("home", "live", "negative_transfer"):
        at = open_page(name)
        assert ALL_ARCHIVED_MESSAGE in texts(at.info) and EMPTY_RUNS_MESSAGE not in texts(at.info), name
        restore = [el.proto for el in at.get("page_link") if el.proto.label == "Restore archived runs"]
        assert restore and restore[0].page.endswith("compare") and "archived=1" in restore[0].query_string, name
