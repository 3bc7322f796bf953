"""Telemetry for VisionCraftAI: OpenTelemetry providers, Prometheus exposition, JSON logs and
health checks.

This package never imports `app`: the app passes in what it needs and creates its own
instruments from the providers of its `Telemetry`.
"""

from telemetry.environment import TelemetryEnvironment
from telemetry.exporters import ExportOutcome, ExportStatus
from telemetry.health import CheckOutcome, ComponentType, HealthChecker, HealthStatus
from telemetry.logs import configure_logging, request_id_var
from telemetry.process_metrics import register_process_metrics
from telemetry.prometheus import render_exposition, render_json
from telemetry.providers import ServiceIdentity, Telemetry

__all__ = [
    "CheckOutcome",
    "ComponentType",
    "ExportOutcome",
    "ExportStatus",
    "HealthChecker",
    "HealthStatus",
    "ServiceIdentity",
    "Telemetry",
    "TelemetryEnvironment",
    "configure_logging",
    "register_process_metrics",
    "render_exposition",
    "render_json",
    "request_id_var",
]
