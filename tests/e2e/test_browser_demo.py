"""End to end in a real browser: Home -> "Run the demo" -> Live draws the curves of a training run.

Starts `streamlit run app/main.py` on a free port with a fresh workspace and worker autostart
on, so the dashboard spawns a real worker that trains the demo. Uses Debian's chromium
(never `playwright install`). Screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_S = 60
TRAIN_TIMEOUT_MS = 180_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)  # polling an HTTP port: there is no event to wait on
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout_s} s")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the workers the server spawned live in their own sessions)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")
    home = tmp_path / "workspace"
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.delenv("PATHSCOPE_NO_AUTOWORKER", raising=False)  # the demo needs a real worker
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until_healthy(url, proc, SERVER_START_S)
        yield url
    finally:
        workers = child_pids(proc.pid)
        stop_group(proc.pid)
        for pid in workers:  # each was started with start_new_session, so it leads its own group
            stop_group(pid)
        proc.wait(timeout=10)
        log.close()


def test_run_the_demo_shows_live_curves(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            page.get_by_role("button", name="Run the demo").click(timeout=60_000)
            expect(page.get_by_role("heading", name="Live")).to_be_visible(timeout=60_000)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            chart.wait_for(state="visible", timeout=TRAIN_TIMEOUT_MS)
            page.screenshot(path=str(ARTIFACTS / "live-training.png"), full_page=True)
            expect(page.get_by_text("The run failed")).to_have_count(0)
            expect(page.get_by_text("done", exact=True).first).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
            expect(page.locator('[data-testid="stPlotlyChart"]')).not_to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "live-done.png"), full_page=True)
            expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        finally:
            browser.close()
