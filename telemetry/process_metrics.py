"""Process metrics read with psutil when a reader collects: CPU, memory, descriptors, threads
and the free space of the data folder.

The names follow the OpenTelemetry process conventions, except that threads and descriptors keep
the earlier names (`process.threads`, `process.open_file_descriptors`): the current ones end in
`.count`, which Prometheus reserves for histograms and which `promtool check metrics` rejects.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psutil
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation


def register_process_metrics(meter_provider: MeterProvider, *, data_dir: Path) -> None:
    """Create the observable instruments on `meter_provider`; they read psutil on collection."""
    process = psutil.Process()
    meter = meter_provider.get_meter(__name__)

    def cpu_time(_options: CallbackOptions) -> Iterable[Observation]:
        times = process.cpu_times()
        yield Observation(times.user, {"cpu.mode": "user"})
        yield Observation(times.system, {"cpu.mode": "system"})

    def memory(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(process.memory_info().rss)

    def descriptors(_options: CallbackOptions) -> Iterable[Observation]:
        if hasattr(process, "num_fds"):  # not on Windows
            yield Observation(process.num_fds())

    def threads(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(process.num_threads())

    def data_dir_usage(_options: CallbackOptions) -> Iterable[Observation]:
        try:
            usage = psutil.disk_usage(str(data_dir))
        except OSError:  # the folder is made on first use; until then there is nothing to say
            return
        yield Observation(usage.free, {"system.filesystem.state": "free"})
        yield Observation(usage.used, {"system.filesystem.state": "used"})

    meter.create_observable_counter(
        "process.cpu.time", [cpu_time], unit="s", description="CPU time used by this process."
    )
    meter.create_observable_up_down_counter(
        "process.memory.usage",
        [memory],
        unit="By",
        description="Resident memory (RSS) of this process.",
    )
    meter.create_observable_up_down_counter(
        "process.open_file_descriptors",
        [descriptors],
        unit="{file_descriptor}",
        description="Open file descriptors of this process.",
    )
    meter.create_observable_up_down_counter(
        "process.threads", [threads], unit="{thread}", description="Threads of this process."
    )
    meter.create_observable_up_down_counter(
        "system.filesystem.usage",
        [data_dir_usage],
        unit="By",
        description="Free and used bytes of the file system of the data folder.",
    )
