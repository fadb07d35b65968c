"""Many runs in a real browser (issue #16's done-means), on runs written straight into the workspace:

1. Compare: tag two runs and write a note from the page; filter the table by the tag; open the page's link in
   a new browser context and find the same filter and selection.
2. Archive a run: it leaves the table, shows under *Archived runs*, and comes back when restored.
3. Delete a run: its rows and its folder are gone.
4. Export the view's HTML report and open it from disk with every network request blocked: its charts draw.

Every wait is on an element; screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from engine import catalog
from engine.store import Store, db_path
from engine.workspace import run_dir
from synthetic_runs import add_finished_run
from tests.e2e.test_browser_suite import ARTIFACTS, UI_TIMEOUT_MS, choose, expect, no_exception, wait_script_idle

TAG = "paper"
GROUP = "sweep-e2e"


@pytest.fixture(scope="module")
def runs(server) -> dict[str, str]:
    """Four finished runs, oldest first; three share a group so the view has a sweep to analyse."""
    return {
        "alpha": add_finished_run(server.home, "alpha", weighting="equal", group_id=GROUP, result={"test_acc": 0.71}),
        "beta": add_finished_run(server.home, "beta", weighting="uncertainty", group_id=GROUP,
                                 result={"test_acc": 0.90}),
        "gamma": add_finished_run(server.home, "gamma", weighting="dwa", group_id=GROUP, result={"test_acc": 0.80}),
        "delta": add_finished_run(server.home, "delta", weighting="equal", result={"test_acc": 0.60}),
    }


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"runs-{name}.png"), full_page=True)


def caption_count(page, count: int):
    """The run table's count line (the selected runs' panel says "For the N run(s) selected above")."""
    return page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(rf"^{count} run\(s\)$"))


def open_compare(page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    wait_script_idle(page)


def selection_box(page):
    return page.get_by_test_id("stMultiSelect").filter(has_text="Runs to compare")


def selected_tags(page) -> list[str]:
    """The run labels held by the *Runs to compare* multiselect."""
    return [text.strip() for text in selection_box(page).locator("[data-tag]").all_inner_texts()]


def open_actions(page):
    """Open the selected runs' panel (the group's own tags and note have a panel too); returns it."""
    panel = page.get_by_test_id("stExpander").filter(has_text="Tags, notes, archive, delete")
    if not panel.get_by_role("button", name="Apply tags").is_visible():  # it stays open once opened (keyed)
        panel.get_by_text("Tags, notes, archive, delete").click(timeout=UI_TIMEOUT_MS)
    expect(panel.get_by_role("button", name="Apply tags")).to_be_visible(timeout=UI_TIMEOUT_MS)
    return panel


def click_and_wait(page, panel, name: str, message: str, tries: int = 3) -> None:
    """Click the panel's button until ``message`` shows: a click that lands while the script reruns is lost (the
    button is drawn anew), so it is clicked again, unless the first one already did its work and took the button
    away (Restore, once the run is restored)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    shown = page.get_by_text(message).first
    for attempt in range(tries):
        wait_script_idle(page)
        button = panel.get_by_role("button", name=name, exact=True)
        if not shown.is_visible() and button.count():
            try:
                button.click(timeout=5_000)
            except PlaywrightTimeoutError:
                pass  # drawn anew meanwhile: the next round finds it again
        try:
            expect(shown).to_be_visible(timeout=20_000)
            break
        except AssertionError:
            if attempt == tries - 1:
                raise
    wait_script_idle(page)


def pick_in_multiselect(page, label: str, option: str, tries: int = 3) -> None:
    """Add ``option`` to the multiselect labelled ``label``; the whole open-and-pick is retried, since a rerun of
    the script can close the list in between (as in test_browser_suite.choose)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    box = page.get_by_test_id("stMultiSelect").filter(has_text=label).first
    for attempt in range(tries):
        wait_script_idle(page)
        try:
            box.click(timeout=UI_TIMEOUT_MS)
            page.get_by_role("option").filter(has_text=option).first.click(timeout=5_000)
            expect(box.locator("[data-tag]").filter(has_text=option)).to_have_count(1, timeout=5_000)
            break
        except (AssertionError, PlaywrightTimeoutError):
            if attempt == tries - 1:
                raise
    page.keyboard.press("Escape")
    wait_script_idle(page)


def entry(home: Path, run_id: str, archived: bool = False) -> catalog.RunEntry | None:
    store = Store(home, readonly=True)
    try:
        return next((e for e in catalog.run_table(store, catalog.RunFilter(archived=archived))
                     if e.run_id == run_id), None)
    finally:
        store.close()


def rows_of(home: Path, run_id: str) -> int:
    con = sqlite3.connect(f"file:{db_path(home)}?mode=ro", uri=True)
    try:
        runs = con.execute("SELECT COUNT(*) FROM runs WHERE id=?", (run_id,)).fetchone()[0]
        return runs + sum(con.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]
                          for table in ("metrics", "events", "run_tags"))
    finally:
        con.close()


def test_tag_note_filter_and_share_the_view(server, browser, page, runs) -> None:
    alpha, beta = runs["alpha"], runs["beta"]
    open_compare(page, f"{server.url}/compare?runs={alpha},{beta}")
    expect(selection_box(page).locator("[data-tag]")).to_have_count(2, timeout=UI_TIMEOUT_MS)
    panel = open_actions(page)
    panel.get_by_role("textbox", name="Add tags").fill(TAG)
    click_and_wait(page, panel, "Apply tags", "Tags of 2 run(s) updated.")
    assert TAG in entry(server.home, alpha).tags and TAG in entry(server.home, beta).tags
    assert TAG not in entry(server.home, runs["gamma"]).tags

    choose(page, "Note of run", next(label for label in selected_tags(page) if alpha in label))
    panel.get_by_role("textbox", name=f"Note of run {alpha} (Markdown)").fill("**Best** of the equal runs")
    click_and_wait(page, panel, "Save note", f"Note of run {alpha} saved.")
    assert entry(server.home, alpha).note == "**Best** of the equal runs"

    page.get_by_text("Filters", exact=True).click(timeout=UI_TIMEOUT_MS)
    pick_in_multiselect(page, "Tags (runs with all of them)", TAG)
    expect(caption_count(page, 2)).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert f"tag={TAG}" in page.url
    no_exception(page)
    shot(page, "01-tagged-and-filtered")

    shared = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        open_compare(shared, page.url)
        expect(caption_count(shared, 2)).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(selection_box(shared).locator("[data-tag]")).to_have_count(len(selected_tags(page)),
                                                                          timeout=UI_TIMEOUT_MS)
        assert sorted(selected_tags(shared)) == sorted(selected_tags(page))
        no_exception(shared)
    finally:
        shared.context.close()


def test_archive_hides_a_run_until_restored(server, page, runs) -> None:
    gamma = runs["gamma"]
    open_compare(page, f"{server.url}/compare?runs={gamma}")
    expect(caption_count(page, 4)).to_be_visible(timeout=UI_TIMEOUT_MS)
    click_and_wait(page, open_actions(page), "Archive", "1 run(s) archived.")
    expect(caption_count(page, 3)).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert entry(server.home, gamma) is None and entry(server.home, gamma, archived=True) is not None

    page.get_by_text("Archived runs", exact=True).click(timeout=UI_TIMEOUT_MS)
    expect(caption_count(page, 1)).to_be_visible(timeout=UI_TIMEOUT_MS)
    # the archived run was picked and left the table: the selection starts again from the one run listed
    expect(selection_box(page).locator("[data-tag]").filter(has_text=gamma)).to_have_count(1, timeout=UI_TIMEOUT_MS)
    click_and_wait(page, open_actions(page), "Restore", "1 run(s) restored.")
    assert entry(server.home, gamma) is not None
    page.get_by_text("Archived runs", exact=True).click(timeout=UI_TIMEOUT_MS)
    expect(caption_count(page, 4)).to_be_visible(timeout=UI_TIMEOUT_MS)


def test_delete_removes_the_rows_and_the_folder(server, page, runs) -> None:
    delta = runs["delta"]
    folder = run_dir(server.home, delta)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "epoch_000.pt").write_bytes(b"checkpoint")
    assert rows_of(server.home, delta) > 0
    open_compare(page, f"{server.url}/compare?runs={delta}")
    panel = open_actions(page)
    panel.get_by_text("Delete for good").click(timeout=UI_TIMEOUT_MS)
    click_and_wait(page, panel, "Delete 1 run(s)", f"Deleted {delta}")
    assert rows_of(server.home, delta) == 0
    assert not folder.exists()
    no_exception(page)


def test_the_html_report_opens_offline_with_its_charts(server, browser, page, runs, tmp_path: Path) -> None:
    open_compare(page, f"{server.url}/compare?group={GROUP}")
    expect(page.get_by_role("heading", name="Sweep analysis")).to_be_visible(timeout=UI_TIMEOUT_MS)
    with page.expect_download(timeout=UI_TIMEOUT_MS) as info:
        page.get_by_role("button", name="Report of this view (HTML)").click(timeout=UI_TIMEOUT_MS)
    report = tmp_path / info.value.suggested_filename
    info.value.save_as(report)
    offline = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    requested: list[str] = []
    offline.route(lambda url: url.startswith(("http://", "https://")),
                  lambda route: (requested.append(route.request.url), route.abort()))
    try:
        offline.goto(report.as_uri())
        expect(offline.locator(".main-svg").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert offline.locator(".js-plotly-plot").count() >= 3  # curves, by combination, the sweep's charts
        offline.screenshot(path=str(ARTIFACTS / "runs-02-report-offline.png"), full_page=True)
    finally:
        offline.context.close()
    assert requested == []
