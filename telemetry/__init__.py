"""Telemetry for VisionCraftAI: logging now; OpenTelemetry providers and health checks join it.

This package never imports `app`: the app passes in what it needs.
"""

from telemetry.logs import configure_logging, request_id_var

__all__ = ["configure_logging", "request_id_var"]
