"""The Configure page's form state: one RunSpec-shaped dict in st.session_state[CFG], and the widget keys that
follow it.

Widget keys carry a version number: replacing the whole spec (upload, reset) bumps it so every widget starts again
from the new dict. Table edits are committed into the dict as soon as they happen and the table is redrawn from the
dict under a new key, so an edit is never applied twice.
"""
from __future__ import annotations

from typing import Any

import streamlit as st
import yaml

from app.param_inputs import yaml_or_problem
from engine.spec import RunSpec, spec_to_dict

CFG = "cfg_spec"
VER = "cfg_ver"
TABLE_VERS = {"teachers": "cfg_teachers_ver", "paths": "cfg_paths_ver"}
EDIT_FIELDS = ("edited_rows", "added_rows", "deleted_rows")


def spec_dict() -> dict[str, Any]:
    return st.session_state[CFG]


def key(name: str) -> str:
    return f"cfg{st.session_state[VER]}.{name}"


def table_key(table: str) -> str:
    return f"{key(table)}.{st.session_state[TABLE_VERS[table]]}"


def replace_spec(spec: RunSpec) -> None:
    st.session_state[CFG] = spec_to_dict(spec)
    st.session_state[VER] = st.session_state.get(VER, -1) + 1
    for name in TABLE_VERS.values():
        st.session_state[name] = 0


def table_edited(table: str) -> bool:
    state = st.session_state.get(table_key(table)) or {}
    return any(state.get(field) for field in EDIT_FIELDS)


def commit_tables(*tables: str) -> None:
    """After folding a table edit into the dict: redraw the tables from it under fresh keys."""
    for table in tables:
        st.session_state[TABLE_VERS[table]] += 1
    st.rerun()


def choice(label: str, options: list[str], current: Any, name: str, **kwargs: Any) -> Any:
    """A selectbox that keeps a value it does not know (from a YAML file) so validation can name it."""
    options = list(options) + ([current] if current is not None and current not in options else [])
    index = options.index(current) if current in options else None
    return st.selectbox(label, options, index=index, key=key(name), **kwargs)


def mapping_input(label: str, value: dict[str, Any], name: str, field: str, problems: list[str]) -> dict[str, Any]:
    """A one-line YAML mapping (e.g. ``{hidden: [64]}``); a bad entry keeps the old value and is reported."""
    shown = yaml.safe_dump(value, default_flow_style=True).strip() if value else "{}"
    text = st.text_input(label, shown, key=key(name))
    data, parsed = yaml_or_problem(text, field, problems, value)
    if not parsed:
        return value
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{field}: expected a mapping such as {{name: value}}, got {type(data).__name__}")
        return value
    return data


def show_errors(errors: list[str]) -> None:
    lines = []
    for error in errors:
        field, sep, message = error.partition(": ")
        lines.append(f"- `{field}`: {message}" if sep else f"- {error}")
    st.error("\n".join(lines))
