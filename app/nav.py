"""The page files and their navigation entries, shared by app/main.py and pages that link on."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"

# name -> (file, title, icon); order is the sidebar order.
_PAGES: dict[str, tuple[str, str, str]] = {
    "home": ("home.py", "Home", ":material/home:"),
    "learn": ("learn.py", "Learn", ":material/school:"),
    "configure": ("configure.py", "Configure", ":material/tune:"),
    "live": ("live.py", "Live", ":material/monitoring:"),
    "teacher_importance": ("teacher_importance.py", "Teacher importance", ":material/balance:"),
    "negative_transfer": ("negative_transfer.py", "Negative transfer", ":material/troubleshoot:"),
    "attribution": ("attribution.py", "Attribution", ":material/visibility:"),
    "compare": ("compare.py", "Compare", ":material/compare_arrows:"),
}


def page_file(name: str) -> str:
    """Absolute path of a page file: st.switch_page and AppTest.switch_page accept it."""
    return str(PAGES_DIR / _PAGES[name][0])


def has_page(name: str) -> bool:
    """Whether a page is in the navigation: st.page_link fails for a page that is not."""
    return name in _PAGES


def build_pages() -> list[st.Page]:
    return [
        st.Page(PAGES_DIR / file, title=title, icon=icon, default=(name == "home"))
        for name, (file, title, icon) in _PAGES.items()
    ]
