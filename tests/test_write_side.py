"""The UI has one write side: app/writes.py is the only module of app/ and pages/ that opens a writable
store, writes to one, or starts a worker; every other module reads (app.cached, read-only stores)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITE_SIDE = ROOT / "app" / "writes.py"
STORE_WRITES = {"create_run", "create_job", "request_cancel", "claim_run", "add_event"}


def ui_modules() -> list[Path]:
    return sorted([*(ROOT / "app").glob("*.py"), *(ROOT / "pages").glob("*.py")])


def called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def is_readonly(call: ast.Call) -> bool:
    return any(kw.arg == "readonly" and isinstance(kw.value, ast.Constant) and kw.value.value is True
               for kw in call.keywords)


def writes_in(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = called_name(node)
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if name == "Store" and not is_readonly(node):
            found.append(f"{where} opens a writable Store")
        elif name == "ensure_worker":
            found.append(f"{where} starts a worker")
        elif name in STORE_WRITES:
            found.append(f"{where} calls {name}")
    return found


def test_the_parser_sees_writes() -> None:
    assert writes_in(WRITE_SIDE), "app/writes.py opens a writable store and starts a worker: the check must see it"


def test_only_the_write_side_writes() -> None:
    offenders = [line for path in ui_modules() if path != WRITE_SIDE for line in writes_in(path)]
    assert offenders == [], "writes outside app/writes.py:\n" + "\n".join(offenders)


def test_pages_never_construct_a_writable_store() -> None:
    for path in sorted((ROOT / "pages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and called_name(node) == "Store":
                assert is_readonly(node), f"{path.name}:{node.lineno} constructs a writable Store"
