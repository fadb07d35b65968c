"""PathScope dashboard entry point, started by its launcher: ``python -m app`` (``make run``), see app/launch.py."""
import sys
from pathlib import Path

# Streamlit puts app/ on sys.path, not the repository root that holds the packages.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from app.launch import exposure_problem, listening_addresses  # noqa: E402
from app.nav import build_pages  # noqa: E402

st.set_page_config(page_title="PathScope", page_icon=":material/hub:", layout="wide")
# `streamlit run` with a flag, an environment variable or a user config that binds a network address would
# serve every run of the workspace to other machines without anyone having asked for it: serve nothing then.
# The sockets the process listens on say where it serves, whatever the config files said.
problem = exposure_problem(listening_addresses())
if problem:
    st.error(problem, icon=":material/lock:")
    st.stop()
st.navigation(build_pages()).run()
