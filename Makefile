# make run   - set up .venv and open the dashboard (http://127.0.0.1:8501)
# make test  - set up .venv (and Chromium for the browser tests) and run the whole suite
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test worker system-packages clean-workspace planted detector bench bench-data repro soak scale \
	dashboard-bench

# Re-installs only when requirements.txt changes, so repeated make calls start at once.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (first time: about two minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $(STAMP)

# Through the launcher: 127.0.0.1, no usage statistics, Host and Origin checked (ARGS="--expose" serves a network).
run: $(STAMP)
	$(PY) -m app $(ARGS)

worker: $(STAMP)
	$(PY) -m engine worker

# Chromium drives the browser tests; without it they are skipped with a message saying so.
system-packages:
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "warning: could not install Debian's chromium: the browser tests will be skipped"

test: $(STAMP) system-packages
	$(PY) -m pytest -q

clean-workspace:
	rm -rf workspace

# Planted-teacher bench (harmful-teacher detection, accuracy per weighting or method); QUICK=1: digits only, minutes.
planted: $(STAMP)
	QUICK=$(QUICK) EXTRA=$(EXTRA) $(PY) bench/planted.py

# Detector bench: defective teachers of six kinds beside a good one (and clean-only pairs), ground truth by
# ablation (5 seeds; the ablation runs do not probe); precision, recall, false flags and first-flag time of the
# detector (with and without the geometry confirming) and of the cosine one, and lookahead against the oracle.
# QUICK=1: digits only, one scenario per kind (331 s measured beside another job, teachers cached).
# DATASETS=digits: the full bench without Fashion-MNIST; SCENARIOS=clean,permuted: scenarios named so;
# SEEDS=3: three seeds instead of five.
detector: $(STAMP)
	QUICK=$(QUICK) DATASETS=$(DATASETS) SCENARIOS=$(SCENARIOS) SEEDS=$(SEEDS) $(PY) bench/detector.py

# Speed bench: epoch times against a plain PyTorch loop and torchdistill, and the Live page's render time.
# QUICK=1: fewer images and repeats, under three minutes (the first call also installs torchdistill into
# bench/.venv-torchdistill, once).
bench: $(STAMP)
	QUICK=$(QUICK) $(PY) bench/speed.py

# Soak: 4 runs in flight, 2 workers, a reader at Live's cadence, random kills and pauses; SOAK_SECONDS (600).
soak: $(STAMP)
	SOAK_SECONDS=$(or $(SOAK_SECONDS),600) $(PY) bench/soak.py

# Reproduction on the CIFAR-10 JPEG slice with the akamaster teachers (bench/repro.py): 12 configurations x 3 seeds
# x 30 epochs, hours on a CPU; QUICK=1: 2 seeds x 2 epochs on 600 images, a check of the set-up (about half an hour here).
repro: $(STAMP)
	QUICK=$(QUICK) $(PY) bench/repro.py

# Scale bench (bench/scale.py): an 8-run digits sweep on the local executor against Ray, the one writer's load with
# 8 trials logging every step, and one run's samples/s with 1 and 2 gloo DDP processes. QUICK=1: about 4 minutes.
scale: $(STAMP)
	QUICK=$(QUICK) $(PY) bench/scale.py

# Data bench: time to first step on the CIFAR-10 JPEG folder (cold, warm), epoch time against the plain PyTorch
# floor, and the memory of a streamed 20,000-image folder. QUICK=1: under about three minutes.
bench-data: $(STAMP)
	QUICK=$(QUICK) $(PY) bench/data_bench.py

# Dashboard bench (bench/dashboard.py): with 1,000 runs in the workspace and 8 paths x 5,000 steps in the newest,
# Compare's first render and a filter change, Live's first render and a poll, and bench/live_page.py's 8 paths x
# 50,000 steps before/after; medians of server time. QUICK=1: fewer repeats, no 50,000-step run.
dashboard-bench: $(STAMP)
	QUICK=$(QUICK) $(PY) bench/dashboard.py
