"""Spans, metrics and the failure log of generations, on the providers the app passes in.

Each generation gets one span that follows the OpenTelemetry GenAI conventions; the database and
HTTP spans of its steps are its children. The backend call alone is timed in
`gen_ai.client.operation.duration`, and its token usage goes to `gen_ai.client.token.usage`.
Prompts are user content: they reach spans and logs only when
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is true, and then truncated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, Span, SpanKind, StatusCode, TracerProvider

from app.errors import ContentPolicyViolation, ServiceError
from app.generation.backend import BackendResult, ImageSpec

if TYPE_CHECKING:
    from app.generation.service import GenerationOutcome, GenerationRequest

logger = logging.getLogger(__name__)

OPERATION_NAME = "generate_content"
# gen_ai.provider.name of each backend; the demo backend is ours and draws in-process.
PROVIDER_NAMES = {"gemini": "gcp.gemini", "demo": "visioncraft.demo"}
IN_PROCESS_BACKENDS = frozenset({"demo"})
# The boundaries the GenAI conventions advise: 0.01 s doubling to 81.92 s.
OPERATION_DURATION_BUCKETS_S = tuple(0.01 * 2**power for power in range(14))
# 1 token multiplied by 4 up to 4^13 (about 67 million), as the conventions advise.
TOKEN_USAGE_BUCKETS = tuple(4**power for power in range(14))
MAX_CAPTURED_PROMPT_CHARS = 1000


def truncate_content(text: str, limit: int = MAX_CAPTURED_PROMPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class GenerationObservation:
    """The span and labels of one running generation, used when it finishes."""

    span: Span
    backend: str
    model: str
    count: int
    image_size: str
    attributes: dict[str, str] = field(default_factory=dict)


class GenerationTelemetry:
    """Creates the generation instruments from the given providers; no-op ones record nothing.

    `image_costs_usd` maps an image size (1K, 2K, 4K) to the estimated upstream cost of one
    image from a paid backend, for the estimated cost metric. The demo backend costs nothing.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        *,
        capture_content: bool = False,
        image_costs_usd: Mapping[str, float] | None = None,
    ) -> None:
        meter = (meter_provider or NoOpMeterProvider()).get_meter(__name__)
        self._tracer = (tracer_provider or NoOpTracerProvider()).get_tracer(__name__)
        self._capture_content = capture_content
        self._costs = dict(image_costs_usd or {})
        self._operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of GenAI operations: one backend call of a generation.",
            explicit_bucket_boundaries_advisory=OPERATION_DURATION_BUCKETS_S,
        )
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used by backend calls, as the backend reported them.",
            explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS,
        )
        self._images = meter.create_counter(
            "visioncraft.images.generated",
            unit="{image}",
            description="Images by backend, model and outcome; failures count the images asked for.",
        )
        self._failures = meter.create_counter(
            "visioncraft.generation.failures",
            unit="{generation}",
            description="Failed generations by backend and reason (the error code clients see).",
        )
        self._safety_blocks = meter.create_counter(
            "visioncraft.safety.blocks",
            unit="{generation}",
            description="Generations blocked by the backend's safety filters, by stage.",
        )
        self._replays = meter.create_counter(
            "visioncraft.idempotency.replays",
            unit="{request}",
            description="Requests that returned the stored result of the same Idempotency-Key.",
        )
        self._cost = meter.create_counter(
            "visioncraft.upstream.cost",
            unit="{USD}",
            description="Estimated upstream cost in US dollars of the images generated.",
        )

    @contextmanager
    def generation(
        self, backend: str, model: str, request: GenerationRequest
    ) -> Iterator[GenerationObservation]:
        """Run one generation inside its span; record its outcome when the block ends."""
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": OPERATION_NAME,
            "gen_ai.provider.name": PROVIDER_NAMES.get(backend, backend),
            "gen_ai.request.model": model,
            "gen_ai.request.choice.count": request.count,
            "gen_ai.output.type": "image",
        }
        if self._capture_content:
            attributes["gen_ai.input.messages"] = _input_messages(request.prompt)
        kind = SpanKind.INTERNAL if backend in IN_PROCESS_BACKENDS else SpanKind.CLIENT
        with self._tracer.start_as_current_span(
            f"{OPERATION_NAME} {model}",
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            observation = GenerationObservation(
                span=span,
                backend=backend,
                model=model,
                count=request.count,
                image_size=request.image_size.value,
            )
            try:
                yield observation
            except BaseException as error:
                self._failed(observation, error, request)
                raise

    def finished(self, observation: GenerationObservation, outcome: GenerationOutcome) -> None:
        """Record a generation that returned images, fresh or replayed."""
        generation = outcome.generation
        span = observation.span
        span.set_attribute("visioncraft.generation.id", generation.id)
        span.set_attribute("gen_ai.response.model", generation.model)
        if outcome.replayed:
            span.set_attribute("visioncraft.generation.outcome", "replayed")
            self._replays.add(1, {"backend": observation.backend})
            return
        span.set_attribute("visioncraft.generation.outcome", "success")
        span.set_attribute("visioncraft.image.count", len(outcome.images))
        labels = {"backend": observation.backend, "model": observation.model}
        self._images.add(len(outcome.images), {**labels, "outcome": "success"})
        cost = self._costs.get(observation.image_size)
        if cost is not None and observation.backend not in IN_PROCESS_BACKENDS:
            self._cost.add(cost * len(outcome.images), {"model": observation.model})

    @contextmanager
    def backend_call(self, backend: str, spec: ImageSpec) -> Iterator[list[BackendResult]]:
        """Time one backend call; put its result in the yielded list to record model and tokens."""
        attributes = {
            "gen_ai.operation.name": OPERATION_NAME,
            "gen_ai.provider.name": PROVIDER_NAMES.get(backend, backend),
            "gen_ai.request.model": spec.model,
        }
        results: list[BackendResult] = []
        started = time.perf_counter()
        try:
            yield results
        except BaseException as error:
            attributes["error.type"] = _error_type(error)
            raise
        finally:
            if results:
                self._record_usage(attributes, results[0])
            self._operation_duration.record(time.perf_counter() - started, attributes)

    def _record_usage(self, attributes: dict[str, str], result: BackendResult) -> None:
        attributes["gen_ai.response.model"] = result.model
        for token_type, count in (("input", result.input_tokens), ("output", result.output_tokens)):
            if count is not None:
                self._token_usage.record(count, {**attributes, "gen_ai.token.type": token_type})

    def _failed(
        self, observation: GenerationObservation, error: BaseException, request: GenerationRequest
    ) -> None:
        reason = _error_type(error)
        span = observation.span
        span.set_attribute("error.type", reason)
        span.set_attribute("visioncraft.generation.outcome", _outcome(error))
        span.set_status(StatusCode.ERROR, reason)
        labels = {"backend": observation.backend, "model": observation.model}
        self._images.add(observation.count, {**labels, "outcome": _outcome(error)})
        self._failures.add(1, {"backend": observation.backend, "reason": reason})
        if isinstance(error, ContentPolicyViolation):
            self._safety_blocks.add(1, {"backend": observation.backend, "stage": error.stage})
        # Other errors reach the problem handler, which logs them with their traceback.
        if not isinstance(error, ServiceError):
            return
        extra = {"backend": observation.backend, "model": observation.model, "reason": reason}
        if self._capture_content:
            extra["prompt"] = truncate_content(request.prompt)
        logger.warning(
            "generation failed with %s (backend %s, model %s): %s",
            reason,
            observation.backend,
            observation.model,
            error.detail,
            extra=extra,
        )


def _error_type(error: BaseException) -> str:
    if isinstance(error, ServiceError):
        return error.instance_code
    return type(error).__qualname__


def _outcome(error: BaseException) -> str:
    if isinstance(error, ContentPolicyViolation):
        return "blocked"
    if isinstance(error, ServiceError):
        return "failed"
    if isinstance(error, Exception):
        return "error"
    return "cancelled"


def _input_messages(prompt: str) -> str:
    message = {"role": "user", "parts": [{"type": "text", "content": truncate_content(prompt)}]}
    return json.dumps([message], ensure_ascii=False)
