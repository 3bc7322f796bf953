"""The export decisions that the standard `OTEL_*` variables make, read once into plain values.

The SDK classes read most variables themselves (the sampler, the resource attributes, the
exporters' endpoints, timeouts and headers, the batch sizes). This module decides only what they
leave to the caller: whether the SDK is on, which signals export over OTLP, and with which protocol.
An OTLP exporter is built only when an endpoint variable names a collector, so a process without
one never tries to export.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

logger = logging.getLogger(__name__)

SIGNALS = ("traces", "metrics", "logs")
GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
DEFAULT_PROTOCOL = HTTP_PROTOBUF  # the specification's default for SDKs
CAPTURE_CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Per signal, besides `otlp` and `none`, values that ask for nothing beyond what always runs.
ALWAYS_ON_EXPORTERS = {"metrics": {"prometheus"}}


class Protocol(StrEnum):
    GRPC = GRPC
    HTTP_PROTOBUF = HTTP_PROTOBUF


@dataclass(frozen=True)
class TelemetryEnvironment:
    """The export decisions of one process.

    `otlp_protocols` maps each signal that exports over OTLP to its protocol; a signal that is
    missing does not export. `capture_message_content` tells whether prompts may be recorded.
    """

    sdk_disabled: bool
    otlp_protocols: Mapping[str, Protocol]
    capture_message_content: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TelemetryEnvironment:
        environ = os.environ if environ is None else environ
        sdk_disabled = _read_bool(environ, "OTEL_SDK_DISABLED")
        protocols: dict[str, Protocol] = {}
        if not sdk_disabled:
            for signal in SIGNALS:
                protocol = _otlp_protocol(environ, signal)
                if protocol is not None:
                    protocols[signal] = protocol
        return cls(
            sdk_disabled=sdk_disabled,
            otlp_protocols=protocols,
            capture_message_content=_read_bool(environ, CAPTURE_CONTENT_VARIABLE),
        )

    def exports(self, signal: str) -> bool:
        return signal in self.otlp_protocols


def _read_bool(environ: Mapping[str, str], name: str) -> bool:
    """Read a boolean variable by the specification's rule: only `true`, in any case, is true."""
    value = environ.get(name, "").strip().lower()
    if value not in {"", "true", "false"}:
        logger.warning("%s=%r is not `true` or `false`; using false", name, environ[name])
    return value == "true"


def _otlp_protocol(environ: Mapping[str, str], signal: str) -> Protocol | None:
    """Return the OTLP protocol of `signal`, or None when it should not export over OTLP."""
    upper = signal.upper()
    if not _wants_otlp(environ, signal):
        return None
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or not endpoint.strip():
        return None
    variable = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
    if not environ.get(variable):
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
    value = environ.get(variable, "").strip().lower() or DEFAULT_PROTOCOL
    try:
        return Protocol(value)
    except ValueError:
        logger.warning(
            "%s=%r is not supported; use `grpc` or `http/protobuf`. Exporting %s with %s",
            variable,
            environ[variable],
            signal,
            DEFAULT_PROTOCOL,
        )
        return Protocol(DEFAULT_PROTOCOL)


def _wants_otlp(environ: Mapping[str, str], signal: str) -> bool:
    """Read OTEL_{SIGNAL}_EXPORTER: `otlp` (the default) or `none`, comma-separated."""
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = {part.strip().lower() for part in environ.get(variable, "otlp").split(",")}
    names.discard("")
    if not names or names == {"none"}:
        return False
    unknown = names - {"otlp", "none"} - ALWAYS_ON_EXPORTERS.get(signal, set())
    if unknown:
        logger.warning(
            "%s names exporters this service does not offer (%s); it offers `otlp` and `none`",
            variable,
            ", ".join(sorted(unknown)),
        )
    return "otlp" in names
