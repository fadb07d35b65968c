"""PathScope's Streamlit front end: shared queries, charts, colours and widgets for pages/."""
