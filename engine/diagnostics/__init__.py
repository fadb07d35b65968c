"""Diagnostics: measurements taken during training that are not losses (negative-transfer probes)."""
