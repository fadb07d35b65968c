"""What the page tests share: open a page of the dashboard in Streamlit's AppTest, and read its charts and texts."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
TIMEOUT_S = 180  # the first run imports torch; a loaded 2-core CI machine needs the slack


def page(name: str) -> str:
    return str(ROOT / "pages" / f"{name}.py")


def open_page(name: str, **state: object) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if name != "home":
        at.switch_page(page(name)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def decode(array: object) -> list:
    """Plotly 7 writes numeric arrays as {'dtype', 'bdata' (base64)[, 'shape' for 2-D]}; plain lists pass through."""
    if isinstance(array, dict) and "bdata" in array:
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        if "shape" in array:
            values = values.reshape([int(n) for n in array["shape"].split(",")])
        return values.tolist()
    return list(array)


def plotly_traces(at: AppTest) -> list[list[dict]]:
    """The traces of every plotly chart on the page, one list per chart."""
    return [json.loads(el.proto.spec)["data"] for el in at.get("plotly_chart")]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def traces_of(at: AppTest, kind: str) -> list[dict]:
    return [t for chart in plotly_traces(at) for t in chart if t["type"] == kind]


def figure_titled(at: AppTest, prefix: str) -> dict:
    return next(f for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                if f["layout"].get("title", {}).get("text", "").startswith(prefix))
