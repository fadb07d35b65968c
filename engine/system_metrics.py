"""System metrics of a training run: its process's CPU use and memory, the machine's memory, and its GPU.

Sampled on the training thread at logged steps, at most once every ``SAMPLE_SECONDS``, and logged with
that step's losses under the ``system/*`` keys of engine.vocabulary, so Live draws them against the step
like every other series. A sample costs about a quarter of a millisecond (psutil reads /proc; NVML asks the
driver), once every few seconds: nothing is added to the steps in between.

GPU metrics come from NVML through the optional ``nvidia-ml-py`` package (imported as ``pynvml``): without
the package, the driver, or a CUDA device the run trains on, a run simply logs no GPU keys.
"""
from __future__ import annotations

import logging
import os
from time import monotonic
from typing import Any, Protocol

import psutil
import torch

from engine.step import Reporter
from engine.telemetry import Recorded
from engine.vocabulary import SYS_CPU_PERCENT, SYS_GPU_MEM_MB, SYS_GPU_UTIL_PERCENT, SYS_MEM_PERCENT, SYS_RSS_MB

SAMPLE_SECONDS = 5.0
MIB = 2 ** 20

log = logging.getLogger("pathscope.system_metrics")


class GpuProbe(Protocol):
    def sample(self) -> dict[str, float]: ...


class NvmlProbe:
    """One GPU's utilisation and memory in use, as NVML reports them for the whole device."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle

    def sample(self) -> dict[str, float]:
        try:
            utilisation = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used
        except self._nvml.NVMLError:  # a GPU that stops answering (reset, MIG change) costs its metrics, not the run
            return {}
        return {SYS_GPU_UTIL_PERCENT: float(utilisation), SYS_GPU_MEM_MB: memory / MIB}


def open_gpu_probe(device: torch.device) -> GpuProbe | None:
    """The NVML probe of the CUDA device a run trains on; None on the CPU, without nvidia-ml-py or a driver."""
    if device.type != "cuda":
        return None
    try:
        import pynvml
    except ImportError:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        pynvml.nvmlInit()
        return NvmlProbe(pynvml, _nvml_handle(pynvml, index))
    except pynvml.NVMLError as err:
        log.info("no GPU metrics for cuda:%s: %s", index, err)
        return None


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML numbers every GPU of the machine, CUDA only the visible ones: the device is found by its UUID, and by
    its index only where every GPU is visible (then both number them alike)."""
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(index).uuid}")
    except pynvml.NVMLError:
        if os.environ.get("CUDA_VISIBLE_DEVICES"):
            raise
        return pynvml.nvmlDeviceGetHandleByIndex(index)


class SystemSampler:
    """Samples this process and the machine (and a GPU, given its probe) at most once every ``interval`` seconds."""

    def __init__(self, gpu: GpuProbe | None, interval: float) -> None:
        self.gpu = gpu
        self.interval = interval
        self._process = psutil.Process()
        self._process.cpu_percent()  # starts the CPU clock: each later call measures since the one before
        self._last = float("-inf")

    def due(self, now_anyway: bool = False) -> dict[str, float]:
        """A sample when the interval has passed since the last one (or ``now_anyway``), else nothing."""
        now = monotonic()
        if not now_anyway and now - self._last < self.interval:
            return {}
        self._last = now
        return self.sample()

    def sample(self) -> dict[str, float]:
        values = {SYS_CPU_PERCENT: self._process.cpu_percent(), SYS_RSS_MB: self._process.memory_info().rss / MIB,
                  SYS_MEM_PERCENT: psutil.virtual_memory().percent}
        if self.gpu is not None:
            values.update(self.gpu.sample())
        return values


class SystemMetricsReporter:
    """A Reporter that adds a due system sample to the values of a logged step, and passes everything on.

    A phase is sampled at its first logged step whatever the interval, so a phase shorter than the interval (an
    inline teacher on small data, a tiny student) still has its system metrics; CPU use is counted in 10 ms clock
    ticks, so a sample taken within a tenth of a second of the one before is coarse.
    """

    def __init__(self, inner: Reporter, sampler: SystemSampler) -> None:
        self.inner = inner
        self.sampler = sampler
        self._phases: set[str] = set()

    def log(self, phase: str, step: int, epoch: int, values: dict[str, float]) -> None:
        sample = self.sampler.due(now_anyway=phase not in self._phases)
        if sample:
            self._phases.add(phase)
        self.inner.log(phase, step, epoch, {**values, **sample})

    def log_array(self, phase: str, step: int, epoch: int, key: str, recorded: Recorded) -> None:
        self.inner.log_array(phase, step, epoch, key, recorded)

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.inner.event(level, message, data)

    def progress(self, fraction: float, phase: str) -> None:
        self.inner.progress(fraction, phase)

    def check_stop(self) -> None:
        self.inner.check_stop()

    def truncate(self, phase: str, epoch: int) -> None:
        self.inner.truncate(phase, epoch)

    def flush(self) -> None:
        self.inner.flush()


def with_system_metrics(reporter: Reporter, device: torch.device) -> SystemMetricsReporter:
    """``reporter``, its logged steps joined by the process's, the machine's and ``device``'s metrics."""
    return SystemMetricsReporter(reporter, SystemSampler(open_gpu_probe(device), SAMPLE_SECONDS))
