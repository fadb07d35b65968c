"""Deep links: a page's selection read from the URL (st.query_params) and written back to it.

A link is user input from anywhere: a value read here is only ever looked up among the ids or
options the page already lists (never turned into a file path or a query), and one that is not
there gets a warning naming it, after which the page falls back to its default.
"""
from __future__ import annotations

from typing import Collection

import streamlit as st

from engine.spec import printable

RUN = "run"
GROUP = "group"
RUNS = "runs"
ARCHIVED = "archived"  # "1": Compare's table lists the archived runs
SEPARATOR = ","  # tags, run ids and group ids never contain one
SHOWN_MAX = 80  # a forged value can be long: the warning shows its start
_WRITTEN = "links_written"  # session_state: key -> the value this session last put in the URL


def shown(value: str) -> str:
    """A URL value as inline code in a message: printable, bounded, with no backtick to break out of the code."""
    text = printable(value)
    text = text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "…"
    return "`" + text.replace("`", "'") + "`"


def read(key: str) -> str | None:
    """The URL's value of ``key`` (the last one when repeated), None when absent or empty."""
    return st.query_params.get(key) or None


def read_list(key: str) -> list[str]:
    """The URL's comma-separated values of ``key``, in order, without blanks or repeats."""
    value = read(key)
    return list(dict.fromkeys(v.strip() for v in value.split(SEPARATOR) if v.strip())) if value else []


def write(key: str, value: str | None) -> None:
    """Put ``value`` in the URL under ``key``; an empty value removes the key, so the URL stays short."""
    st.session_state.setdefault(_WRITTEN, {})[key] = value or None
    if value:
        if st.query_params.get(key) != value:
            st.query_params[key] = value
    elif key in st.query_params:
        del st.query_params[key]


def opened(key: str) -> bool:
    """Whether the URL's ``key`` came with the link (or was edited), not echoed from this session's own last
    write: a page's pick made in code (a run just launched) must win over the URL it wrote before."""
    return read(key) is not None and read(key) != st.session_state.get(_WRITTEN, {}).get(key)


def write_list(key: str, values: Collection[str]) -> None:
    write(key, SEPARATOR.join(values))


def unknown_warning(what: str, values: list[str], default: str) -> None:
    names = ", ".join(shown(v) for v in values[:5]) + (f" and {len(values) - 5} more" if len(values) > 5 else "")
    st.warning(f"The link names {what} {names}, not listed here (not in this workspace, or archived or filtered out): showing {default} instead.",
               icon=":material/link_off:")


def linked_choice(key: str, options: Collection[str], what: str, default: str) -> str | None:
    """The URL's ``key`` when it is one of ``options``; None when the URL has none, or (with a warning naming
    it) when it names something else. ``options`` should be a set for a long list."""
    value = read(key)
    if value is None or value in options:
        return value
    unknown_warning(what, [value], default)
    return None


def linked_choices(key: str, options: Collection[str], what: str, default: str) -> list[str] | None:
    """The URL's ``key`` values that are among ``options`` (a warning names the others); None when the URL has
    none of its own, so the caller applies its default."""
    values = read_list(key)
    if not values:
        return None
    known = [v for v in values if v in options]
    if len(known) < len(values):
        unknown_warning(what, [v for v in values if v not in options], "the others" if known else default)
    return known
