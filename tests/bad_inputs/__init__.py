"""The bad-input corpus of issue 12: every case a spec file (or folder) the engine must refuse with a message."""
