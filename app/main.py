"""PathScope dashboard entry point: ``streamlit run app/main.py``."""
import sys
from pathlib import Path

# Streamlit puts app/ on sys.path, not the repository root that holds the packages.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from app.nav import build_pages  # noqa: E402

st.set_page_config(page_title="PathScope", page_icon=":material/hub:", layout="wide")
st.navigation(build_pages()).run()
