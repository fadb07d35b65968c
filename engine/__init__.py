"""PathScope's training engine. Never imports Streamlit: the dashboard reads what this writes to the store."""
