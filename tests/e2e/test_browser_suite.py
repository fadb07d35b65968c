"""The whole dashboard in a real browser, as a user goes through it.

1. Configure: upload a two-teacher spec, switch its path method to AMTML-KD in the form, launch it.
2. Live: the progress moves while the run trains, then the per-path weight curves are drawn.
3. Teacher importance, Negative transfer and Attribution for that run, with their charts and tables;
   attribution maps and agreement curves are computed by the worker on request.
4. Home: run the demo as a second run; Compare overlays both and exports them as CSV.

One streamlit server and one chromium for the module (conftest.py), worker autostart on, so the runs
really train. Every wait is on an element. Screenshots of every step go to tests/artifacts/ (gitignored).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
MULTI_SPEC = ROOT / "assets" / "configs" / "digits_multi.yaml"
TRAIN_TIMEOUT_MS = 300_000
JOB_TIMEOUT_MS = 180_000
UI_TIMEOUT_MS = 60_000
CSV_HEADER = ["run_id", "phase", "step", "epoch", "key", "value"]
# A progress text of a run that has not finished, e.g. "queued · 0%" or "teacher:cnn · 35%".
UNFINISHED_PROGRESS = re.compile(r"· (\d|[1-9]\d)%$")


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page, name: str, focus=None) -> None:
    """A screenshot of the window; ``focus`` (a locator) is scrolled into view first, since Streamlit
    scrolls its main area itself and a full-page screenshot would show only the top."""
    if focus is not None:
        focus.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"suite-{name}.png"))


def main_area(page):
    return page.get_by_test_id("stMain")


def wait_script_idle(page) -> None:
    """Streamlit shows a status widget ("Running…") while the script runs: wait until it is gone."""
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=UI_TIMEOUT_MS)


def open_page(page, title: str, heading: str | None = None) -> None:
    """Open a page through the sidebar (the session, so the selected run, is kept) and wait for its title."""
    page.get_by_test_id("stSidebarNavLink").filter(has_text=title).first.click(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("heading", name=heading or title, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    wait_script_idle(page)


def no_exception(page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)


def charts_titled(page, text: str):
    return page.get_by_test_id("stPlotlyChart").filter(has_text=text)


def run_ids(home: Path) -> list[str]:
    from engine.store import Store

    store = Store(home, readonly=True)
    try:
        return [run.id for run in store.list_runs()]
    finally:
        store.close()


def retry_until_visible(action, target, timeout_ms: int, tries: int = 3) -> None:
    """Do ``action`` until ``target`` shows: an action that lands while the script reruns can be lost."""
    for attempt in range(tries):
        action()
        try:
            expect(target).to_be_visible(timeout=timeout_ms)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def choose(page, label: str, option: str, type_to_filter: bool = False, tries: int = 3) -> None:
    """Pick ``option`` in the selectbox labelled ``label``; ``type_to_filter`` types it first, for a box
    with a thousand options (every torchvision and timm model).

    A rerun of the script can close the list between opening it and picking, either before the option
    shows or just after, so the whole open-and-pick is retried until the box holds the option.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    box = page.get_by_test_id("stSelectbox").filter(has_text=label).first
    target = page.get_by_role("option", name=option, exact=True)
    for attempt in range(tries):
        wait_script_idle(page)
        try:
            box.click(timeout=UI_TIMEOUT_MS)
            if type_to_filter:
                box.get_by_role("combobox").fill(option)
            target.click(timeout=5_000)
            expect(box.get_by_role("combobox")).to_have_value(option, timeout=5_000)
            break
        except (AssertionError, PlaywrightTimeoutError):
            if attempt == tries - 1:
                raise
    wait_script_idle(page)


def wait_until_done_on_live(page) -> None:
    area = main_area(page)
    expect(area.get_by_text("done", exact=True).or_(area.get_by_text("The run failed")).first) \
        .to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    expect(area.get_by_text("The run failed")).to_have_count(0)
    wait_script_idle(page)


def download_csv(page, tmp_dir: Path) -> list[list[str]]:
    with page.expect_download(timeout=UI_TIMEOUT_MS) as info:
        page.get_by_role("button", name="Download metrics (CSV)").click(timeout=UI_TIMEOUT_MS)
    target = tmp_dir / info.value.suggested_filename
    info.value.save_as(target)
    with open(target, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def two_teacher_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits_multi.yaml shortened to seconds (teachers 2 epochs, student 4), diagnostics probing every 5 steps."""
    spec = yaml.safe_load(MULTI_SPEC.read_text())
    for teacher in spec["teachers"]:
        teacher["source"]["epochs"] = 2
    spec["epochs"] = 4
    spec["diagnostics"] = {"enabled": True, "every": 5}
    path = tmp_path_factory.mktemp("spec") / MULTI_SPEC.name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def path_ids() -> list[str]:
    return [p["id"] for p in yaml.safe_load(MULTI_SPEC.read_text())["paths"]]


def configure_and_launch(page, spec_file: Path) -> None:
    open_page(page, "Configure")
    page.get_by_text("Upload a spec (YAML) to fill the form").click()
    uploader = page.get_by_role("region", name="Upload spec (YAML)")
    uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(spec_file))
    expect(page.get_by_text(f"Loaded {spec_file.name} into the form.")).to_be_visible(timeout=UI_TIMEOUT_MS)
    wait_script_idle(page)
    choose(page, "Path method", "amtml")
    expect(page.get_by_text("The spec is valid.")).to_be_visible(timeout=UI_TIMEOUT_MS)
    no_exception(page)
    shot(page, "01-configure-two-teachers")
    page.get_by_role("button", name="Launch run").click()


def watch_live(page) -> None:
    """The page updates while the run trains (its progress moves), then draws every term's weight and the
    stack of weighted terms that adds up to the total loss."""
    expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    progress = main_area(page).get_by_test_id("stProgress")
    # Any unfinished state counts as the start: waiting for a mid-training one raced the run, whose
    # student phase takes seconds once the teachers are trained (it had finished between two polls).
    expect(progress).to_have_text(UNFINISHED_PROGRESS, timeout=TRAIN_TIMEOUT_MS)
    seen = progress.inner_text()
    shot(page, "02-live-training")
    expect(progress).not_to_have_text(seen, timeout=TRAIN_TIMEOUT_MS)
    wait_until_done_on_live(page)
    weights = charts_titled(page, "Term weights")
    expect(weights.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    stack = charts_titled(page, "What each term adds to the total loss")
    for label in ("task (CE)", "amtml · fused KD", "total loss (logged)"):
        expect(stack.first.get_by_text(label, exact=True).first).to_be_attached()
    expect(page.get_by_text("the bands add up to the total loss", exact=False).first).to_be_visible()
    no_exception(page)
    shot(page, "03-live-done", focus=weights.first)


def check_teacher_importance(page) -> None:
    open_page(page, "Teacher importance")
    expect(page.get_by_role("heading", name=re.compile("AMTML"))).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    no_exception(page)
    shot(page, "04-teacher-importance")


def check_negative_transfer(page, path_ids: list[str]) -> None:
    open_page(page, "Negative transfer")
    expect(page.get_by_role("heading", name="Verdicts")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("heading", name="Measurements over training")).to_be_visible()
    expect(charts_titled(page, "Verdict over training")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    # One heatmap row per path: the probe measured every one of them.
    cosines = charts_titled(page, "Cosine between each path's gradient and the task gradient")
    expect(cosines).to_have_count(1, timeout=UI_TIMEOUT_MS)
    for path_id in path_ids:
        expect(cosines.get_by_text(path_id, exact=True).first).to_be_attached()
    no_exception(page)
    shot(page, "05-negative-transfer", focus=cosines)


def check_attribution(page) -> None:
    open_page(page, "Attribution")
    # The worker indexes the test split first; then four samples are picked by default.
    samples = page.get_by_test_id("stMultiSelect").filter(has_text="Samples")
    expect(samples).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(samples.locator("[data-tag]")).to_have_count(4)
    wait_script_idle(page)
    page.get_by_role("button", name="Explain the selected samples").click()
    # One row of maps per sample: input, the two teachers, the student.
    rows = charts_titled(page, "student")
    expect(rows).to_have_count(4, timeout=JOB_TIMEOUT_MS)
    for model in ("input", "cnn", "mlp"):
        expect(rows.first.get_by_text(model, exact=True).first).to_be_attached()
    wait_script_idle(page)
    expect(main_area(page).get_by_text("integrated_gradients at checkpoint")).to_be_visible()
    shot(page, "06-attribution-maps", focus=rows.first)
    page.get_by_role("button", name="Compute agreement over checkpoints").click()
    for title in ("Spearman", "top-k"):
        expect(charts_titled(page, title)).to_have_count(1, timeout=JOB_TIMEOUT_MS)
    for teacher in ("cnn", "mlp"):  # one curve per teacher
        expect(charts_titled(page, "Spearman").get_by_text(teacher, exact=True).first).to_be_attached()
    no_exception(page)
    shot(page, "07-attribution-agreement", focus=charts_titled(page, "Spearman"))


def test_two_teacher_run_through_every_page(server, page, two_teacher_spec, path_ids) -> None:
    page.goto(server.url)
    expect(page.get_by_role("heading", name="PathScope")).to_be_visible(timeout=UI_TIMEOUT_MS)
    wait_script_idle(page)
    configure_and_launch(page, two_teacher_spec)
    watch_live(page)
    assert len(run_ids(server.home)) == 1
    check_teacher_importance(page)
    check_negative_transfer(page, path_ids)
    check_attribution(page)


def test_compare_two_runs_and_export_csv(server, page, tmp_path) -> None:
    first = run_ids(server.home)
    assert len(first) == 1, "the first test leaves one finished two-teacher run"
    page.goto(server.url)
    expect(page.get_by_role("heading", name="PathScope")).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.get_by_role("button", name="Run the demo").click(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    wait_until_done_on_live(page)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    shot(page, "08-live-demo-done")
    ids = run_ids(server.home)
    assert len(ids) == 2

    open_page(page, "Compare")
    overlay = page.get_by_test_id("stMultiSelect").filter(has_text="Runs to compare")
    expect(overlay.locator("[data-tag]")).to_have_count(2, timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    no_exception(page)
    shot(page, "09-compare-two-runs", focus=page.get_by_test_id("stPlotlyChart").last)
    rows = download_csv(page, tmp_path)
    assert rows[0] == CSV_HEADER
    exported = {row[0] for row in rows[1:]}
    assert exported == set(ids)
    keys = {row[4] for row in rows[1:]}
    assert {"loss/total", "acc/test"} <= keys
