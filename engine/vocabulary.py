"""The words the engine writes and the pages read: metric keys, phases, spot names, step-time sections,
verdicts, and the telemetry declarations of plugins.

The engine logs under these names and ``app/`` and ``pages/`` read them from here, so a renamed key
changes both sides at once instead of emptying a page silently. Ground module: it imports nothing
from the engine, so every layer may import it.
"""
from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- phases (the "phase" column of metrics)
MAIN_PHASE = "main"            # the student's training
SEARCH_PHASE = "search"        # a path method's search before training (DFA)
EXPLAIN_PHASE = "explain"      # attribution agreement per checkpoint
TEACHER_PHASE_PREFIX = "teacher:"


def teacher_phase(teacher_id: str) -> str:
    """The phase of a teacher trained inline: 'teacher:<id>'."""
    return f"{TEACHER_PHASE_PREFIX}{teacher_id}"


def is_teacher_phase(phase: str) -> bool:
    return phase.startswith(TEACHER_PHASE_PREFIX)


def teacher_of_phase(phase: str) -> str:
    """'teacher:<id>' -> '<id>'."""
    return phase[len(TEACHER_PHASE_PREFIX):]


# ---------------------------------------------------------------- model ids of attribution jobs
STUDENT_MODEL = "student"
TEACHER_MODEL_PREFIX = "teacher:"  # "teacher:<id>" (a teacher may be called "student" in a spec)


# ---------------------------------------------------------------- spot names every model has
LOGITS_SPOT = "fc"   # the logits (every architecture taps them under this name)
POOL_SPOT = "pool"   # the pooled embedding before the classifier

# ---------------------------------------------------------------- metric keys
LR_KEY = "lr"
LOSS_PREFIX = "loss/"
TOTAL_LOSS = "loss/total"
TASK = "task"                  # the task cross-entropy among the named losses
TASK_LOSS = f"{LOSS_PREFIX}{TASK}"
VAL_LOSS = "loss/val"
PATH_PREFIX = "path:"          # a path's named loss is "path:<id>"
WEIGHT_PREFIX = "weight/"
PATH_LOSS_PREFIX = f"{LOSS_PREFIX}{PATH_PREFIX}"
PATH_WEIGHT_PREFIX = f"{WEIGHT_PREFIX}{PATH_PREFIX}"
ACC_PREFIX = "acc/"
TRAIN_ACC, VAL_ACC, TEST_ACC = "acc/train", "acc/val", "acc/test"
ACC_KEYS = (TRAIN_ACC, VAL_ACC, TEST_ACC)
TIME_PREFIX = "time/"
THROUGHPUT_KEY = "throughput/samples_per_s"
# Step-time sections in the order a step runs them; each is logged as "time/<section>" (ms per step).
# "aggregator" is the weighting's work (weights, gradient matrix, own learners); the key predates the split
# into weightings and path methods and stays so that stored runs keep drawing.
TIME_SECTIONS = ("data", "teachers", "student", "paths", "aggregator", "backward", "diagnostics")
#: what charts call a section whose key says something else
SECTION_LABELS = {"aggregator": "weighting"}
DIAG_PREFIX = "diag/"          # the negative-transfer probe: "diag/<measure>:<path id>"
AGREE_PREFIX = "agree/"        # attribution agreement: "agree/<measure>:<teacher id>"
LABELS_KEY = "labels"          # the array of each recorded sample's class, logged beside per-sample telemetry
# System metrics of the training process and its device (engine/system_metrics.py), sampled every few seconds.
SYSTEM_PREFIX = "system/"
SYS_CPU_PERCENT = "system/cpu_percent"            # the training process's CPU use (%, 100 = one core busy)
SYS_RSS_MB = "system/rss_mb"                      # the training process's resident memory (MiB)
SYS_MEM_PERCENT = "system/mem_percent"            # the machine's memory in use, every process (%)
SYS_GPU_UTIL_PERCENT = "system/gpu_util_percent"  # the run's GPU: time a kernel ran in NVML's last second or so (%)
SYS_GPU_MEM_MB = "system/gpu_mem_mb"              # the run's GPU: memory in use on it, every process (MiB)
GPU_KEYS = (SYS_GPU_UTIL_PERCENT, SYS_GPU_MEM_MB)


def path_key(path_id: str) -> str:
    """The named loss of a path: 'path:<id>'."""
    return f"{PATH_PREFIX}{path_id}"


def loss_key(name: str) -> str:
    return f"{LOSS_PREFIX}{name}"


def weight_key(name: str) -> str:
    return f"{WEIGHT_PREFIX}{name}"


def time_key(section: str) -> str:
    return f"{TIME_PREFIX}{section}"


def diag_key(measure: str, subject: str) -> str:
    return f"{DIAG_PREFIX}{measure}:{subject}"


def agree_key(measure: str, teacher_id: str) -> str:
    return f"{AGREE_PREFIX}{measure}:{teacher_id}"


# ---------------------------------------------------------------- verdicts of the negative-transfer probe
HELPS, NEUTRAL, HURTS = "helps", "neutral", "hurts"
VERDICT_CODE = {HURTS: -1.0, NEUTRAL: 0.0, HELPS: 1.0}  # the value of "diag/verdict:<path>"
VERDICT_OF_CODE = {-1: HURTS, 0: NEUTRAL, 1: HELPS}


# ---------------------------------------------------------------- telemetry declarations
# Views the Teacher importance page knows how to draw (app/telemetry_views.py); a plugin names one.
TEACHER_WEIGHTS_VIEW = "teacher_weights"  # per-sample shares over teachers: simplex (3) or bars, per class, gallery
ROUTING_VIEW = "routing"                  # per-sample 0/1 decisions over spots: fraction per spot, map, per class
GROUP_HEATMAPS_VIEW = "group_heatmaps"    # per group, a steps x blocks heatmap, with per-group curves
VIEWS = (TEACHER_WEIGHTS_VIEW, ROUTING_VIEW, GROUP_HEATMAPS_VIEW)


@dataclass(frozen=True)
class TelemetryArray:
    """One array a plugin records: its key, what its rows and columns are, and what a value means.

    ``role`` is the part it plays in the panel's view (the view's renderer asks for arrays by role).
    ``per_group``: the key is a prefix, one array per group ("dfa/alpha:<group>").
    """

    role: str
    key: str
    axes: tuple[str, str]
    meaning: str
    phase: str = MAIN_PHASE
    per_group: bool = False

    def group_of(self, key: str) -> str:
        return key[len(self.key):]

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.per_group else key == self.key


@dataclass(frozen=True)
class TelemetryMetric:
    """A scalar series a plugin logs for its view (per group when ``per_group``: the key is a prefix)."""

    role: str
    key: str
    meaning: str
    phase: str = MAIN_PHASE
    per_group: bool = False


@dataclass(frozen=True)
class TelemetryPanel:
    """What a plugin records for the Teacher importance page, and how it suggests drawing it.

    ``arrays[0]`` is the primary array: the panel shows when a run has it. ``when`` completes
    "<plugin> records its arrays ..." for a run that has recorded none yet.
    """

    title: str
    caption: str
    view: str
    when: str
    arrays: tuple[TelemetryArray, ...]
    metrics: tuple[TelemetryMetric, ...] = ()

    @property
    def primary(self) -> TelemetryArray:
        return self.arrays[0]

    def array(self, role: str) -> TelemetryArray:
        return next(a for a in self.arrays if a.role == role)

    def metric(self, role: str) -> TelemetryMetric:
        return next(m for m in self.metrics if m.role == role)

    def recorded(self, keys: list[str]) -> list[str]:
        """The keys among a run's array keys that are this panel's primary array (several when per group)."""
        return [k for k in keys if self.primary.matches(k)]
