"""An exported HTML report opened from disk in Debian's Chromium with the network blocked: its charts draw, it
asks for nothing over the network, and a run named like a script runs nothing.

The screenshot goes to /tmp/report_shot.png for a look. Skipped, with the reason, without Chromium or playwright.
"""
from __future__ import annotations

from pathlib import Path

from app.report import write_report
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.synthetic_runs import add_diagnosed_run

HOSTILE = "<script>alert(1)</script>"
SHOT = Path("/tmp/report_shot.png")
DRAW_TIMEOUT_MS = 30_000
# every chart container holds a drawn plotly plot (its .main-svg layer)
ALL_DRAWN = ("() => { const charts = document.querySelectorAll('.chart');"
             " return charts.length > 0 && [...charts].every(c => c.querySelector('.main-svg')); }")


def test_the_report_draws_offline_and_runs_no_stored_script(home: Path, tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    run_id = add_diagnosed_run(home, name=HOSTILE)
    report = write_report(home, run_id, tmp_path / "report.html")
    requested, dialogs, errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.route("http://**/*", lambda route: (requested.append(route.request.url), route.abort()))
            page.route("https://**/*", lambda route: (requested.append(route.request.url), route.abort()))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("pageerror", lambda error: errors.append(str(error)))
            # a load the page's policy refused (it would have gone out) is reported as a console error
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(report.as_uri())
            page.wait_for_function(ALL_DRAWN, timeout=DRAW_TIMEOUT_MS)
            charts = page.locator(".chart").count()
            # the page's own text shows the name as text, and the charts are interactive (plotly's toolbar)
            assert page.locator("h1").inner_text() == f"PathScope · Run {HOSTILE}"
            assert page.locator(".chart .modebar-container").count() == charts == 5
            assert "hurts" in page.locator("#chart-4").inner_text()  # the verdict history's legend
            page.screenshot(path=str(SHOT), full_page=True)
        finally:
            browser.close()
    assert requested == [] and dialogs == [] and errors == []
