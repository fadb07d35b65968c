"""Shared fixtures of the browser tests: a streamlit server on a free port and Debian's chromium.

The server runs ``streamlit run app/main.py`` with a fresh workspace (PATHSCOPE_HOME) and worker
autostart on, so launched runs really train. At teardown it stops the server's process group and
the group of each worker it spawned. Chromium is Debian's (never ``playwright install``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
SERVER_START_S = 60


@dataclass
class Server:
    url: str
    home: Path  # the workspace (PATHSCOPE_HOME) the server and its workers use


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


def require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One streamlit server per test module, with its own workspace and worker autostart on."""
    require_browser()
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "workspace"
    env = dict(os.environ, PATHSCOPE_HOME=str(home))
    env.pop("PATHSCOPE_NO_AUTOWORKER", None)  # runs need a real worker
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until_healthy(url, proc, SERVER_START_S)
        yield Server(url=url, home=home)
    finally:
        workers = child_pids(proc.pid)
        stop_group(proc.pid)
        for pid in workers:  # each was started with start_new_session, so it leads its own group
            stop_group(pid)
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item, so the page fixture can see that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh browser page; when its test fails, a screenshot of it goes to tests/artifacts/failed-<test>.png."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
        context.close()
