"""Start the dashboard the same safe way from any folder: ``python -m app`` (``make run``) or ``python app/launch.py``.

Streamlit reads ``.streamlit/config.toml`` from the working directory and the main script's folder, and a
user's ``~/.streamlit/config.toml``, environment variables or flags override those files. So the launcher
passes what must hold as flags, which win over every file: bind 127.0.0.1, usage statistics off (no request
to an outside address), XSRF and CORS protection on, headless. It also refuses, before Streamlit sees them,
HTTP requests whose Host is not a loopback name with the bound port (DNS rebinding: a page of evil.example
whose name now resolves to 127.0.0.1) and WebSocket upgrades whose Origin is not this very dashboard
(cross-site WebSocket hijacking: Streamlit itself accepts any origin that names localhost, any port).
``--expose [ADDRESS]`` serves a network on purpose; app/main.py refuses to serve a non-loopback address the
launcher was not told to expose (``exposure_problem``), as a `streamlit run` given such an address would.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

MAIN = Path(__file__).resolve().with_name("main.py")
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8501
#: what ``--expose`` without an address binds: every IPv4 interface
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - only on the user's explicit --expose
#: set by the launcher in its own environment to the address it was told to expose (app/main.py reads it)
EXPOSED_ENV = "PATHSCOPE_EXPOSED_ADDRESS"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104 - named to say what they mean, never bound here
EXPOSE_WARNING = ("WARNING: PathScope is exposed on {address} port {port}. Anyone who can reach it can "
                  "queue runs, read every run of the workspace and write into it: there is no login. Expose it "
                  "only on a network you trust, or behind a proxy that authenticates.")


def is_loopback(address: str) -> bool:
    """True for the names and addresses that only this machine can reach."""
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def listening_addresses() -> list[tuple[str, int]]:
    """The (address, port) pairs this process listens on: where the dashboard really serves, whatever the config
    said (no server at all, as under AppTest: none)."""
    return sorted({(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
                   if c.status == psutil.CONN_LISTEN})


def exposure_problem(listening: list[tuple[str, int]]) -> str | None:
    """Why the dashboard must not serve, listening on ``listening``: an address other machines can reach that the
    launcher was not told to expose; None when it may serve."""
    exposed = os.environ.get(EXPOSED_ENV)
    reachable = [(ip, port) for ip, port in listening if not is_loopback(ip) and ip != exposed]
    if not reachable:
        return None
    ip, port = reachable[0]
    where = f"{ip} port {port}" + (" (every network interface)" if ip in WILDCARDS else "")
    return (f"PathScope refuses to serve: it listens on {where}, which other machines can reach, and was not "
            "started by its launcher with --expose. Stop it and start it with `make run` or "
            "`python app/launch.py` (it binds 127.0.0.1); to serve a network on purpose, add "
            "`--expose ADDRESS` (see README, 'Starting the dashboard, and exposing it').")


# ------------------------------------------------------------------ the Host and Origin check
def _addresses_this_port(url: str | None, port: int | None) -> bool:
    """True when ``url`` (a Host header as "//host:port", or an Origin) names a loopback host and ``port``."""
    try:
        parts = urlsplit(url or "")
        return parts.hostname is not None and is_loopback(parts.hostname) and parts.port == port
    except ValueError:  # a malformed address, a port that is no number or out of range
        return False


class LoopbackOnly:
    """ASGI middleware: answer only requests addressed to this machine's loopback names and the bound port.

    The bound port comes from the ASGI scope's "server" (the listening socket), so it is right even when
    Streamlit picked the port. A WebSocket upgrade without Origin is let through: browsers always send one,
    and a client that is no browser cannot be driven by another site.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _allowed(scope: dict[str, Any]) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        port = (scope.get("server") or (None, None))[1]
        if not _addresses_this_port(f"//{headers.get('host', '')}", port):
            return False
        origin = headers.get("origin")
        if scope["type"] == "websocket" and origin is not None:
            return origin.startswith(("http://", "https://")) and _addresses_this_port(origin, port)
        return True

    @staticmethod
    async def _refuse(scope: dict[str, Any], send: Any) -> None:
        if scope["type"] == "websocket":
            # Closing before accepting: the server answers the upgrade with 403 Forbidden.
            await send({"type": "websocket.close", "code": 1008})
            return
        port = (scope.get("server") or (None, "PORT"))[1]
        body = f"403 Forbidden: PathScope answers only at http://127.0.0.1:{port} or http://localhost:{port}\n".encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def install_loopback_only() -> None:
    """Put LoopbackOnly in front of Streamlit's own middleware.

    Streamlit (1.67, on Starlette and uvicorn) builds its app with ``create_streamlit_middleware()``, looked up
    in its module when the server starts: wrapping that function is the one hook that needs no copy of
    Streamlit's code. ``server.allowedHosts`` is no substitute: it checks WebSockets only, and ignores ports.
    """
    import streamlit
    from starlette.middleware import Middleware

    try:
        from streamlit.web.server.starlette import starlette_app

        streamlit_middleware = starlette_app.create_streamlit_middleware
    except (ImportError, AttributeError) as err:  # another Streamlit than requirements.txt's: do not start unchecked
        raise SystemExit(f"app/launch.py cannot check Host and Origin with Streamlit {streamlit.__version__} ({err}): "
                         "install the version requirements.txt pins (make run does)") from err
    starlette_app.create_streamlit_middleware = lambda: [Middleware(LoopbackOnly), *streamlit_middleware()]


# ------------------------------------------------------------------ the command
def ip_address(text: str) -> str:
    """``--expose``'s value in the form the listening socket reports it, so app/main.py can recognise it."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address (e.g. 192.168.1.20, or 0.0.0.0 for every "
                                         "interface): --expose binds an address, not a name") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="Start the PathScope dashboard.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--expose", nargs="?", const=ALL_INTERFACES, type=ip_address, metavar="ADDRESS",
                        help="serve a network, not only this machine: bind ADDRESS (default: every interface, "
                             f"{ALL_INTERFACES}); prints a warning, as anyone who reaches it can use the dashboard")
    return parser.parse_args(argv)


def streamlit_flags(address: str, port: int, exposed: bool) -> list[str]:
    """The flags of ``streamlit run`` that must hold wherever the launcher starts (flags win over config files)."""
    flags = {
        "server.address": address,
        "server.port": str(port),
        "server.headless": "true",  # no browser opened by the server, no e-mail prompt
        "browser.gatherUsageStats": "false",
        "server.enableXsrfProtection": "true",
        "server.enableCORS": "true",
        "global.developmentMode": "false",
        # An unexpected error shows its type and a generic message, never a traceback (that goes to the console,
        # the worker's and the server's logs): pages catch the failures they expect and name the problem.
        "client.showErrorDetails": "type",
    }
    if exposed:  # the names users reach it by are unknown: lift the config file's list of loopback names
        flags["server.allowedHosts"] = "*"
        # Streamlit's welcome message asks an outside service for the machine's public address when bound to
        # every interface; the launcher's warning names the address instead.
        flags["logger.hideWelcomeMessage"] = "true"
    return [f"--{name}={value}" for name, value in flags.items()]


def main(argv: list[str] | None = None) -> None:
    """Run Streamlit on app/main.py, bound to 127.0.0.1 unless ``--expose`` says otherwise, until it is stopped."""
    args = parse_args(argv)
    address = args.expose or LOOPBACK
    exposed = not is_loopback(address)
    if exposed:
        print(EXPOSE_WARNING.format(address=address, port=args.port), file=sys.stderr)
        os.environ[EXPOSED_ENV] = address
    else:
        install_loopback_only()
    from streamlit.web import cli as streamlit_cli

    streamlit_cli.main(["run", str(MAIN), *streamlit_flags(address, args.port, exposed)], prog_name="streamlit")


if __name__ == "__main__":
    main()
