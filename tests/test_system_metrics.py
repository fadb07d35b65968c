"""System metrics per run: a real digits run logs its process's CPU and memory and the machine's memory; GPU
metrics come from NVML where a CUDA device and nvidia-ml-py are there, and their absence is no error."""
from __future__ import annotations

import json
import os
import sys
import threading
import types
from contextlib import closing
from pathlib import Path

import psutil
import pytest
import torch

from engine import system_metrics
from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store
from engine.system_metrics import MIB, NvmlProbe, SystemMetricsReporter, SystemSampler, open_gpu_probe
from engine.vocabulary import (
    GPU_KEYS, MAIN_PHASE, SYS_CPU_PERCENT, SYS_GPU_MEM_MB, SYS_GPU_UTIL_PERCENT, SYS_MEM_PERCENT, SYS_RSS_MB,
    SYSTEM_PREFIX, teacher_phase,
)
from engine.worker import execute_claimed
from tests.conftest import tiny_spec_dict
from tests.synthetic_runs import STEPS, add_finished_run, epoch_of
from tests.page_helpers import decode, open_page, texts

CPU_KEYS = {SYS_CPU_PERCENT, SYS_RSS_MB, SYS_MEM_PERCENT}


def system_rows(rows: list[tuple], phase: str = MAIN_PHASE) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of each system/* series of ``phase`` among (phase, step, epoch, key, value) rows."""
    found: dict[str, list[tuple[int, float]]] = {}
    for row_phase, step, _, key, value in rows:
        if row_phase == phase and key.startswith(SYSTEM_PREFIX):
            found.setdefault(key, []).append((step, value))
    return found


def test_a_digits_run_stores_plausible_system_metrics_at_its_logged_steps(home: Path, monkeypatch) -> None:
    """Through the worker's path (claim, execute, the store's writer), on the CPU."""
    # Samples closer than a few clock ticks (10 ms) would measure CPU use too coarsely to check.
    monkeypatch.setattr(system_metrics, "SAMPLE_SECONDS", 0.25)
    spec = parse_spec(tiny_spec_dict(epochs=1))
    with closing(Store(home)) as store:
        run_id = store.create_run(spec_to_yaml(spec), spec.name)
        assert execute_claimed(store, store.claim_run("test", run_id), threading.Event()) is not None
        rows = [tuple(row) for row in store.metrics(run_id)]
    found = system_rows(rows)
    assert set(found) == CPU_KEYS  # a CPU run: no GPU keys
    sampled = {step for step, _ in found[SYS_CPU_PERCENT]}
    assert sampled and sampled <= {step for phase, step, _, _, _ in rows if phase == MAIN_PHASE}  # at logged steps
    assert all(len(found[key]) == len(sampled) for key in CPU_KEYS)  # the three keys of a sample together
    cpu = [value for _, value in found[SYS_CPU_PERCENT]]
    # 100 % is one core; a 10 ms clock tick over 0.25 s can add 4 points
    assert all(0.0 <= value <= 104.0 * (os.cpu_count() or 1) for value in cpu) and max(cpu) > 0.0  # it trained
    rss = [value for _, value in found[SYS_RSS_MB]]
    own_mib = psutil.Process().memory_info().rss / MIB  # the run trained in this process
    assert all(100.0 < value < 2 * own_mib for value in rss), (rss, own_mib)  # torch alone takes over 100 MiB
    assert all(0.0 < value <= 100.0 for _, value in found[SYS_MEM_PERCENT])
    assert set(system_rows(rows, teacher_phase("t"))) == CPU_KEYS  # the inline teacher's training is sampled too


def test_samples_are_spaced_by_the_interval(monkeypatch) -> None:
    clock = iter([100.0, 101.0, 104.9, 105.0, 109.0, 110.5])
    monkeypatch.setattr(system_metrics, "monotonic", lambda: next(clock))
    sampler = SystemSampler(None, interval=5.0)
    taken = [bool(sampler.due()) for _ in range(6)]
    assert taken == [True, False, False, True, False, True]


class Recorder:
    """The values of each logged step, by phase (what a Reporter's ``log`` receives)."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, dict[str, float]]] = []

    def log(self, phase: str, step: int, epoch: int, values: dict[str, float]) -> None:
        self.logged.append((phase, values))


def test_each_phase_is_sampled_at_its_first_logged_step(monkeypatch) -> None:
    clock = iter([0.0, 1.0, 2.0, 2.05, 3.0])
    monkeypatch.setattr(system_metrics, "monotonic", lambda: next(clock))
    recorder = Recorder()
    reporter = SystemMetricsReporter(recorder, SystemSampler(None, interval=5.0))
    for phase in ("teacher:t", "teacher:t", "main", "other", "other"):
        reporter.log(phase, 0, 0, {"loss/total": 1.0})
    sampled = [(phase, SYS_CPU_PERCENT in values) for phase, values in recorder.logged]
    # a new phase is sampled at its first logged step even inside the interval, then once per interval
    assert sampled == [("teacher:t", True), ("teacher:t", False), ("main", True), ("other", True),
                       ("other", False)]
    assert all(values["loss/total"] == 1.0 for _, values in recorder.logged)


class FakeNvml(types.ModuleType):
    """NVML as nvidia-ml-py exposes it, for one GPU; ``fail`` names the call that raises NVMLError."""

    class NVMLError(Exception):
        pass

    def __init__(self, fail: str = "") -> None:
        super().__init__("pynvml")
        self.fail = fail
        self.asked_uuid = None

    def _maybe_fail(self, name: str) -> None:
        if self.fail == name:
            raise self.NVMLError(f"{name} failed")

    def nvmlInit(self) -> None:
        self._maybe_fail("nvmlInit")

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self._maybe_fail("nvmlDeviceGetHandleByUUID")
        self.asked_uuid = uuid
        return "handle"

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle {index}"

    def nvmlDeviceGetUtilizationRates(self, handle: str):
        self._maybe_fail("nvmlDeviceGetUtilizationRates")
        return types.SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetMemoryInfo(self, handle: str):
        return types.SimpleNamespace(used=3 * 1024 * MIB, total=80 * 1024 * MIB, free=77 * 1024 * MIB)


@pytest.fixture
def cuda_props(monkeypatch) -> None:
    """torch's view of a CUDA device, on a machine that has none."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(uuid="1234-abcd"))


def test_gpu_metrics_come_from_nvml_for_the_runs_device(monkeypatch, cuda_props) -> None:
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = open_gpu_probe(torch.device("cuda", 1))
    assert nvml.asked_uuid == "GPU-1234-abcd"  # found by UUID: NVML's index differs where CUDA sees a subset
    sample = SystemSampler(probe, interval=0.0).sample()
    assert sample[SYS_GPU_UTIL_PERCENT] == 37.0 and sample[SYS_GPU_MEM_MB] == 3 * 1024.0
    assert CPU_KEYS <= set(sample)


def test_no_nvml_package_means_no_gpu_keys_and_no_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    assert open_gpu_probe(torch.device("cuda", 0)) is None
    assert not set(SystemSampler(None, interval=0.0).sample()) & set(GPU_KEYS)


def test_nvml_without_a_driver_or_on_a_cpu_run_means_no_gpu_keys(monkeypatch, cuda_props) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail="nvmlInit"))  # the package, but no driver
    assert open_gpu_probe(torch.device("cuda", 0)) is None
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    assert open_gpu_probe(torch.device("cpu")) is None


def test_a_gpu_that_stops_answering_costs_its_metrics_only(monkeypatch) -> None:
    probe = NvmlProbe(FakeNvml(fail="nvmlDeviceGetUtilizationRates"), "handle")
    sample = SystemSampler(probe, interval=0.0).sample()
    assert set(sample) == CPU_KEYS


# ---------------------------------------------------------------- the Live page's System panel
def system_metric_rows(gpu: bool) -> list[tuple[str, int, int, str, float]]:
    values = {SYS_CPU_PERCENT: 180.0, SYS_RSS_MB: 950.0, SYS_MEM_PERCENT: 41.0}
    if gpu:
        values.update({SYS_GPU_UTIL_PERCENT: 87.0, SYS_GPU_MEM_MB: 20_480.0})
    return [(MAIN_PHASE, step, epoch_of(step), key, value) for step in STEPS[::3] for key, value in values.items()]


def system_charts(at) -> dict[str, dict]:
    """The System panel's figures by title, with their traces' values decoded."""
    found = {}
    for chart in at.get("plotly_chart"):
        figure = json.loads(chart.proto.spec)
        title = figure["layout"].get("title", {}).get("text", "")
        if title in ("CPU, memory and GPU use", "Memory"):
            found[title] = figure
    return found


def test_live_draws_a_cpu_runs_system_metrics_and_says_why_there_are_no_gpu_ones(workspace: Path) -> None:
    run_id = add_finished_run(workspace, extra_metrics=system_metric_rows(gpu=False))
    with closing(Store(workspace)) as store:
        store.set_placement(run_id, {"executor": "local", "node": "here", "devices": "cpu"})
    at = open_page("live", selected_run=run_id)
    assert "System" in texts(at.markdown)
    assert "No GPU metrics: the run trains on the CPU (cpu)." in texts(at.caption)
    charts_by_title = system_charts(at)
    use, memory = charts_by_title["CPU, memory and GPU use"], charts_by_title["Memory"]
    assert use["layout"]["yaxis"]["title"]["text"] == "% (CPU: 100 = one core busy)"
    assert memory["layout"]["yaxis"]["title"]["text"] == "memory (MiB)"
    assert use["layout"]["xaxis"]["title"]["text"] == "step"
    assert {t["name"]: decode(t["y"]) for t in use["data"]} == {
        "process CPU": [180.0] * 4, "machine memory in use": [41.0] * 4}
    assert {t["name"]: decode(t["y"]) for t in memory["data"]} == {"process memory (RSS)": [950.0] * 4}


def test_live_draws_a_gpu_runs_utilisation_and_memory(workspace: Path) -> None:
    run_id = add_finished_run(workspace, extra_metrics=system_metric_rows(gpu=True))
    with closing(Store(workspace)) as store:
        store.set_placement(run_id, {"executor": "local", "node": "here", "devices": "cuda:0"})
    at = open_page("live", selected_run=run_id)
    assert "No GPU metrics" not in texts(at.caption)
    charts_by_title = system_charts(at)
    assert decode(next(t["y"] for t in charts_by_title["CPU, memory and GPU use"]["data"]
                       if t["name"] == "GPU utilisation")) == [87.0] * 4
    assert decode(next(t["y"] for t in charts_by_title["Memory"]["data"]
                       if t["name"] == "GPU memory in use")) == [20_480.0] * 4


def test_live_says_when_a_run_has_no_system_metrics(workspace: Path) -> None:
    at = open_page("live", selected_run=add_finished_run(workspace))
    assert "No system metrics in this phase" in texts(at.caption)
    assert system_charts(at) == {}
