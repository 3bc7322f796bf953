"""The health report as `application/health+json`, and the system facts shown to admins.

The shape follows the IETF draft "Health Check Response Format for HTTP APIs"
(draft-inadarei-api-health-check): a top-level `status`, and `checks` keyed
`component:measurement`, each an array of objects with `componentType`, `observedValue`,
`observedUnit`, `status`, `time` and `output`. The brief document carries only the statuses.
Observed values, versions and system facts help an attacker map the service, so only admins
get the detailed document.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from telemetry.health import CheckResult, ComponentType, HealthReport, HealthStatus
from telemetry.health_checks import existing_folder

HEALTH_MEDIA_TYPE = "application/health+json"


@dataclass(frozen=True)
class ServiceDescription:
    """The draft's service fields: public API version, release, instance id and description."""

    version: str
    release_id: str
    service_id: str
    description: str


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def brief_document(report: HealthReport, *, notes: Sequence[str] = ()) -> dict[str, Any]:
    """Return the status and each check's status, and nothing an attacker could use."""
    document: dict[str, Any] = {
        "status": report.status.value,
        "checks": {
            result.check.key: [{"status": result.status.value}] for result in report.results
        },
    }
    if notes:
        document["notes"] = list(notes)
    return document


def detailed_document(
    report: HealthReport,
    *,
    service: ServiceDescription,
    system: SystemFacts,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Return everything: versions, observed values, outputs, uptime and system facts."""
    checks: dict[str, list[dict[str, Any]]] = {
        result.check.key: [_detailed_result(result)] for result in report.results
    }
    now = format_time(datetime.now(UTC))
    checks["uptime"] = [
        {
            "componentType": ComponentType.SYSTEM.value,
            "observedValue": round(system.uptime_s, 1),
            "observedUnit": "s",
            "status": HealthStatus.PASS.value,
            "time": now,
        }
    ]
    checks["cpu:utilization"] = [
        {
            "componentType": ComponentType.SYSTEM.value,
            "observedValue": system.cpu_percent,
            "observedUnit": "percent",
            "status": HealthStatus.PASS.value,
            "time": now,
        }
    ]
    document: dict[str, Any] = {
        "status": report.status.value,
        "version": service.version,
        "releaseId": service.release_id,
        "serviceId": service.service_id,
        "description": service.description,
        "checks": checks,
        "system": system.as_json(),
    }
    if notes:
        document["notes"] = list(notes)
    return document


def _detailed_result(result: CheckResult) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if result.check.component_id is not None:
        entry["componentId"] = result.check.component_id
    entry.update(
        {
            "componentType": result.check.component_type.value,
            "observedValue": result.observed_value,
            "observedUnit": result.observed_unit,
            "status": result.status.value,
            "time": format_time(result.time),
            "critical": result.check.critical,
        }
    )
    if result.output is not None:
        entry["output"] = result.output
    return entry


@dataclass(frozen=True)
class SystemFacts:
    """CPU, memory, disk, Python and platform of this process and its machine."""

    python: str
    platform: str
    cpu_count: int | None
    cpu_percent: float
    process_cpu_percent: float
    memory_total_bytes: int
    memory_available_bytes: int
    memory_limit_bytes: int
    process_rss_bytes: int
    disk_path: str
    disk_total_bytes: int
    disk_free_bytes: int
    pid: int
    threads: int
    uptime_s: float

    def as_json(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "platform": self.platform,
            "cpu": {
                "count": self.cpu_count,
                "utilizationPercent": self.cpu_percent,
                "processUtilizationPercent": self.process_cpu_percent,
            },
            "memory": {
                "totalBytes": self.memory_total_bytes,
                "availableBytes": self.memory_available_bytes,
                "limitBytes": self.memory_limit_bytes,
                "processResidentBytes": self.process_rss_bytes,
            },
            "disk": {
                "path": self.disk_path,
                "totalBytes": self.disk_total_bytes,
                "freeBytes": self.disk_free_bytes,
            },
            "process": {"pid": self.pid, "threads": self.threads, "uptimeSeconds": self.uptime_s},
        }


class SystemProbe:
    """Reads `SystemFacts`; CPU percentages cover the time since the previous reading.

    `read` blocks briefly (psutil reads /proc and the file system): call it in a thread.
    """

    def __init__(self, data_dir: Path, *, memory_limit_bytes: int) -> None:
        self._data_dir = data_dir
        self._memory_limit_bytes = memory_limit_bytes
        self._process = psutil.Process()
        # The first reading of each CPU percentage is meaningless, so take it now.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)

    def read(self) -> SystemFacts:
        memory = psutil.virtual_memory()
        disk_path = existing_folder(self._data_dir)
        disk = psutil.disk_usage(str(disk_path))
        with self._process.oneshot():
            rss = int(self._process.memory_info().rss)
            threads = self._process.num_threads()
            process_cpu = self._process.cpu_percent(interval=None)
            created = self._process.create_time()
        return SystemFacts(
            python=f"{platform.python_implementation()} {platform.python_version()}",
            platform=platform.platform(),
            cpu_count=os.cpu_count(),
            cpu_percent=psutil.cpu_percent(interval=None),
            process_cpu_percent=process_cpu,
            memory_total_bytes=int(memory.total),
            memory_available_bytes=int(memory.available),
            memory_limit_bytes=self._memory_limit_bytes,
            process_rss_bytes=rss,
            disk_path=str(disk_path),
            disk_total_bytes=int(disk.total),
            disk_free_bytes=int(disk.free),
            pid=os.getpid(),
            threads=threads,
            uptime_s=round(max(0.0, time.time() - created), 1),
        )
