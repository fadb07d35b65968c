"""The launcher keeps the dashboard on this machine wherever it is started (issue 12, "safe wherever started").

Started from a temporary folder (no .streamlit/config.toml there), it listens on 127.0.0.1 only, opens no
connection to another machine while starting and serving a page, answers 403 to a DNS-rebinding Host and
refuses a WebSocket from another site. `streamlit run app/main.py` from elsewhere stays on 127.0.0.1 too, and
app/main.py refuses to serve on a network address nobody exposed.
"""
from __future__ import annotations

import http.client
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from app import launch
from app.launch import EXPOSED_ENV, exposure_problem

ROOT = Path(__file__).resolve().parents[1]
START_S = 90
PAGE_S = 120


@dataclass
class Launched:
    proc: subprocess.Popen
    port: int
    remote: set[str] = field(default_factory=set)  # every remote address its processes connected to

    def record_connections(self) -> None:
        """Add the remote addresses of the launcher's connections (and its children's) seen right now."""
        try:
            parent = psutil.Process(self.proc.pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                self.remote.update(c.raddr.ip for c in process.net_connections(kind="inet") if c.raddr)
            except psutil.NoSuchProcess:
                continue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, host: str) -> int:
    """The status of GET / sent to the launcher with the Host header ``host``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def wait_until_answering(launched: Launched) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        launched.record_connections()
        if launched.proc.poll() is not None:
            raise RuntimeError(f"the launcher exited with code {launched.proc.returncode}")
        try:
            if get(launched.port, f"127.0.0.1:{launched.port}") == 200:
                return
        except OSError:
            time.sleep(0.2)  # polling a port that is not open yet: there is no event to wait on
    raise TimeoutError(f"the launcher did not answer on port {launched.port} within {START_S} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher's process group (it and anything it started), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def started(command: list[str], folder: Path, port: int) -> Iterator[Launched]:
    """``command`` run from ``folder`` (no .streamlit/config.toml there) with its own workspace and no worker,
    once it answers on ``port``; stopped afterwards whatever happened."""
    env = dict(os.environ, PATHSCOPE_HOME=str(folder / "workspace"), PATHSCOPE_NO_AUTOWORKER="1")
    env.pop(EXPOSED_ENV, None)
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            launched = Launched(proc, port)
            wait_until_answering(launched)
            yield launched
        finally:
            stop(proc)


def listening(launched: Launched) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(launched.proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """The launcher started from an empty temporary folder."""
    port = free_port()
    with started([sys.executable, str(ROOT / "app" / "launch.py"), "--port", str(port)],
                 tmp_path_factory.mktemp("elsewhere"), port) as launched:
        yield launched


def load_page(port: int, origin: str) -> list[str]:
    """Open a session as the browser does and run the Home page; the kinds of message the server sent."""
    kinds = []
    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", origin=origin, subprotocols=["streamlit"],
                 open_timeout=20) as ws:
        back = BackMsg()
        back.rerun_script.query_string = ""
        ws.send(back.SerializeToString())
        deadline = time.monotonic() + PAGE_S
        while "script_finished" not in kinds:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            kinds.append(msg.WhichOneof("type"))
    return kinds


def test_listens_on_loopback_only_when_started_elsewhere(launched: Launched) -> None:
    assert listening(launched) == {("127.0.0.1", launched.port)}


def test_streamlit_run_from_elsewhere_listens_on_loopback_only(tmp_path: Path) -> None:
    """Not through the launcher: the settings beside app/main.py apply whatever the working directory."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.port", str(port)]
    with started(command, tmp_path, port) as server:
        assert listening(server) == {("127.0.0.1", port)}


def test_connects_to_no_other_machine_while_starting_and_serving_a_page(launched: Launched) -> None:
    kinds = load_page(launched.port, f"http://127.0.0.1:{launched.port}")
    assert "delta" in kinds  # the Home page really ran and drew something
    launched.record_connections()
    outside = {ip for ip in launched.remote if not ipaddress.ip_address(ip).is_loopback}
    assert not outside, f"connections to {outside}"


#: a DNS-rebinding name with the dashboard's port, without a port, and the right name with another port
@pytest.mark.parametrize("wrong_host", ["evil.example:{port}", "evil.example", "127.0.0.1:{other}"])
def test_refuses_a_host_that_is_not_this_dashboard(launched: Launched, wrong_host: str) -> None:
    assert get(launched.port, f"localhost:{launched.port}") == 200
    assert get(launched.port, wrong_host.format(port=launched.port, other=launched.port + 1)) == 403


def test_refuses_a_websocket_from_another_site(launched: Launched) -> None:
    for origin in ("http://evil.example", f"http://evil.example:{launched.port}", "http://localhost:3000",
                   f"file://localhost:{launched.port}", "http://[::1"):
        with pytest.raises(InvalidStatus) as refused:
            load_page(launched.port, origin)
        assert refused.value.response.status_code == 403, origin


def test_accepts_a_websocket_from_itself(launched: Launched) -> None:
    assert "script_finished" in load_page(launched.port, f"http://localhost:{launched.port}")


def test_a_network_address_is_served_only_when_the_launcher_exposed_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPOSED_ENV, raising=False)
    assert exposure_problem([]) is None  # no server (AppTest)
    assert exposure_problem([("127.0.0.1", 8501), ("::1", 8501)]) is None
    assert "listens on :: port 8501 (every network interface)" in exposure_problem([("::", 8501)])
    monkeypatch.setenv(EXPOSED_ENV, "192.168.1.5")
    assert exposure_problem([("192.168.1.5", 8501)]) is None
    assert "0.0.0.0 port 8501" in exposure_problem([("0.0.0.0", 8501)])  # exposing one address allows no other


def test_dashboard_listening_on_all_interfaces_serves_nothing(workspace: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """As `streamlit run app/main.py --server.address 0.0.0.0` would: the page says to use the launcher, and no
    page runs. The test process itself listens on every interface (nothing ever connects) while the app runs."""
    monkeypatch.delenv(EXPOSED_ENV, raising=False)
    with socket.socket() as exposed:
        exposed.bind(("0.0.0.0", 0))
        exposed.listen()
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and "make run" in at.error[0].value and "0.0.0.0" in at.error[0].value
    assert not at.button and not at.markdown  # no Home page: nothing to click, nothing about any run


def started_with(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], bool]:
    """The `streamlit` command line the launcher runs for ``argv``, and whether it checks Host and Origin."""
    calls: list[list[str]] = []
    checked: list[bool] = []
    monkeypatch.setattr("streamlit.web.cli.main", lambda args, prog_name: calls.append(args))
    monkeypatch.setattr(launch, "install_loopback_only", lambda: checked.append(True))
    monkeypatch.setenv(EXPOSED_ENV, "")  # records the variable's state, so the launcher's setting is undone
    monkeypatch.delenv(EXPOSED_ENV)
    launch.main(argv)
    return calls[0], bool(checked)


def test_launcher_sets_what_must_hold_as_flags(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    args, checked = started_with(["--port", "8600"], monkeypatch)
    assert args[:2] == ["run", str(ROOT / "app" / "main.py")] and checked
    assert {"--server.address=127.0.0.1", "--server.port=8600", "--browser.gatherUsageStats=false",
            "--server.enableXsrfProtection=true", "--server.headless=true", "--client.showErrorDetails=type"} <= set(args)
    assert "WARNING" not in capsys.readouterr().err


def test_exposing_is_explicit_and_warns(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    args, checked = started_with(["--expose", "--port", "8600"], monkeypatch)
    assert "--server.address=0.0.0.0" in args and "--browser.gatherUsageStats=false" in args and not checked
    assert "WARNING: PathScope is exposed on 0.0.0.0 port 8600" in capsys.readouterr().err
    assert os.environ[EXPOSED_ENV] == "0.0.0.0"  # so app/main.py serves on it
    args, _ = started_with(["--expose", "192.168.1.5"], monkeypatch)
    assert "--server.address=192.168.1.5" in args and os.environ[EXPOSED_ENV] == "192.168.1.5"


def test_exposing_takes_an_ip_address(capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        launch.parse_args(["--expose", "myhost.lan"])
    assert refused.value.code == 2
    assert "'myhost.lan' is not an IP address" in capsys.readouterr().err
