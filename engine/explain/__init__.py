"""Attribution maps (captum) of a run's student and teachers, their agreement over training, and the
jobs that compute them as cached artifacts of the run (see engine/explain/job.py)."""
