"""``python -m app``: start the dashboard through its launcher (app/launch.py), safe from any folder."""
from app.launch import main

main()
