"""The `gemini` backend: Gemini image models through the google-genai SDK.

Each image is one `generateContent` call with `response_modalities=["IMAGE"]`, so a request
for n images makes n concurrent calls with the seeds `seed`, `seed + 1`, ... The SDK reads its
credentials from the environment (GOOGLE_API_KEY or GEMINI_API_KEY, or the Vertex AI
variables), and the client is built on the first call, so the service starts without them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import httpx2
from google import genai
from google.auth import exceptions as auth_exceptions
from google.genai import errors, types
from opentelemetry.trace import TracerProvider
from PIL import Image, UnidentifiedImageError

from app.errors import (
    ContentPolicyViolation,
    RateLimitedError,
    ServiceError,
    UpstreamError,
    UpstreamUnavailableError,
)
from app.generation.backend import BackendImage, BackendResult, ImageSpec, ModelInfo
from app.generation.options import ImageSize
from telemetry.http_client import TracingTransport

logger = logging.getLogger(__name__)

# Gemini image model ids current in late 2026, with the description that GET /models shows.
CURRENT_MODELS: dict[str, str] = {
    "gemini-3.1-flash-image": "Gemini 3.1 Flash Image.",
    "gemini-3-pro-image": "Gemini 3 Pro Image.",
    "gemini-3.1-flash-lite-image": "Gemini 3.1 Flash-Lite Image, the lowest-cost one.",
}
IMAGE_SIZES = (ImageSize.K1, ImageSize.K2, ImageSize.K4)
DEFAULT_RETRY_AFTER_S = 30.0
CREDENTIALS_HELP = (
    "Set GOOGLE_API_KEY or GEMINI_API_KEY, or set GOOGLE_GENAI_USE_VERTEXAI=true with "
    "GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION, and restart the service."
)

# Finish reasons of a candidate whose image the safety filters withheld.
OUTPUT_BLOCK_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_OTHER",
        "IMAGE_RECITATION",
        "NO_IMAGE",
    }
)
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
# A google.protobuf.Duration in its JSON form, such as "47s" or "1.500s".
DURATION_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)s$")


@dataclass(frozen=True)
class _CallResult:
    image: BackendImage
    model_version: str | None
    input_tokens: int | None
    output_tokens: int | None


class GeminiBackend:
    """Generate images with a Gemini image model, one concurrent API call per image.

    `api_key` overrides the SDK's environment variables, and `http_options` is passed to the
    SDK client (tests set `base_url` to a local fake). With `tracer_provider`, each API call gets
    an HTTP client span. For health checks, `last_call_at` (UTC)
    and `last_call_outcome` describe the last `generate`. The outcome is one of "success",
    "blocked", "rate_limited", "unavailable", "error" or "cancelled".
    """

    name = "gemini"

    def __init__(
        self,
        model: str,
        *,
        http_options: types.HttpOptions | None = None,
        api_key: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if tracer_provider is not None:
            http_options = _traced(http_options, tracer_provider)
        self.model = model
        self.last_call_at: datetime | None = None
        self.last_call_outcome: str | None = None
        self._http_options = http_options
        self._api_key = api_key
        self._client: genai.Client | None = None
        self._client_lock = asyncio.Lock()

    def models(self) -> Sequence[ModelInfo]:
        """Return the configured model first, then the other current Gemini image models."""
        ids = [self.model, *(model for model in CURRENT_MODELS if model != self.model)]
        return [
            ModelInfo(
                id=model,
                backend=self.name,
                image_sizes=IMAGE_SIZES,
                description=CURRENT_MODELS.get(model, "Set by VISIONCRAFT_GEMINI_MODEL."),
            )
            for model in ids
        ]

    async def generate(self, spec: ImageSpec) -> BackendResult:
        """Generate `spec.count` images with concurrent calls, and return all of them or none.

        The first failed call cancels the others and its error is raised: ContentPolicyViolation,
        RateLimitedError, UpstreamUnavailableError or UpstreamError. Cancelling the caller
        cancels the calls in flight.
        """
        try:
            result = await self._generate(spec)
        except BaseException as error:
            self._record_call(_outcome_of(error))
            raise
        self._record_call("success")
        return result

    async def prepare(self) -> None:
        """Build the SDK client now, so that missing credentials show at start, not on a call."""
        await self._get_client()

    async def aclose(self) -> None:
        """Close the SDK client's connections, if a client was built."""
        client, self._client = self._client, None
        if client is None:
            return
        await client.aio.aclose()
        client.close()

    async def _generate(self, spec: ImageSpec) -> BackendResult:
        client = await self._get_client()
        first_error: Exception | None = None
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._generate_one(client, spec, seed))
                    for seed in _seeds(spec)
                ]
        except ExceptionGroup as failures:
            # The TaskGroup has cancelled the other calls. Raising the first error outside this
            # block keeps its own cause (the SDK error) instead of chaining the group.
            first_error = failures.exceptions[0]
        if first_error is not None:
            raise first_error

        return _combine([task.result() for task in tasks], requested_model=spec.model)

    async def _get_client(self) -> genai.Client:
        async with self._client_lock:
            if self._client is None:
                # In Vertex AI mode the SDK may look up default credentials, which can block.
                self._client = await asyncio.to_thread(self._build_client)
            return self._client

    def _build_client(self) -> genai.Client:
        try:
            client = genai.Client(api_key=self._api_key, http_options=self._http_options)
        except (ValueError, auth_exceptions.GoogleAuthError) as error:
            raise UpstreamUnavailableError(
                f"The gemini backend found no usable Google credentials. {CREDENTIALS_HELP}"
            ) from error
        logger.info(
            "Built the google-genai client for model %s (Vertex AI: %s)",
            self.model,
            client.vertexai,
        )
        return client

    async def _generate_one(self, client: genai.Client, spec: ImageSpec, seed: int) -> _CallResult:
        response = await self._call_api(client, spec, seed)
        blob = _final_image(response)
        data = blob.data or b""
        width, height, detected_mime_type = await asyncio.to_thread(_inspect_image, data)
        usage = response.usage_metadata
        return _CallResult(
            image=BackendImage(
                data=data,
                mime_type=blob.mime_type or detected_mime_type,
                width=width,
                height=height,
                seed=seed,
            ),
            model_version=response.model_version,
            input_tokens=usage.prompt_token_count if usage else None,
            output_tokens=usage.candidates_token_count if usage else None,
        )

    async def _call_api(
        self, client: genai.Client, spec: ImageSpec, seed: int
    ) -> types.GenerateContentResponse:
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(
                aspect_ratio=spec.aspect_ratio, image_size=spec.image_size.value
            ),
            seed=seed,
        )
        try:
            return await client.aio.models.generate_content(
                model=spec.model, contents=spec.prompt, config=config
            )
        except errors.APIError as error:
            raise self._translate_api_error(error, spec.model) from error
        except auth_exceptions.RefreshError as error:
            raise UpstreamUnavailableError(
                "The Google credentials of the gemini backend could not be refreshed. "
                f"{CREDENTIALS_HELP}"
            ) from error
        # NOTE: with aiohttp installed the SDK sends through aiohttp instead, whose errors are
        # not mapped here. The project does not depend on aiohttp.
        except (httpx.HTTPError, httpx2.HTTPError, auth_exceptions.TransportError) as error:
            raise UpstreamError(
                f"The Gemini API could not be reached ({type(error).__name__}). Try again later."
            ) from error
        except (json.JSONDecodeError, errors.UnknownApiResponseError) as error:
            raise UpstreamError(
                "The Gemini API sent a response that is not valid JSON. Try again later."
            ) from error

    def _translate_api_error(self, error: errors.APIError, model: str) -> ServiceError:
        """Map an API error to the service error for its status, with a detail that names the fix."""
        status = f"HTTP {error.code} {error.status or ''}".rstrip()
        if error.code == 429 or error.status == "RESOURCE_EXHAUSTED":
            retry_delay_s = _retry_delay_s(error)
            retry_after_s = DEFAULT_RETRY_AFTER_S if retry_delay_s is None else retry_delay_s
            return RateLimitedError(
                "The Gemini API quota of this service is exhausted. "
                f"Retry after {retry_after_s:g} seconds.",
                code="backend_rate_limited",
                retry_after_s=retry_after_s,
            )
        if error.code in (401, 403) or _is_api_key_invalid(error):
            return UpstreamUnavailableError(
                f"The Gemini API rejected the credentials of the gemini backend ({status}). "
                f"{CREDENTIALS_HELP}"
            )
        if error.code == 404 and model == self.model:
            return UpstreamUnavailableError(
                f"The Gemini API has no model {model!r} ({status}). Set VISIONCRAFT_GEMINI_MODEL "
                f"to a current image model id, such as {', '.join(CURRENT_MODELS)}."
            )
        if error.code == 404:
            return UpstreamError(
                f"The Gemini API has no model {model!r} ({status}). Use the default model "
                f"{self.model!r} instead."
            )
        return UpstreamError(f"The Gemini API call failed ({status}). Try again later.")

    def _record_call(self, outcome: str) -> None:
        self.last_call_at = datetime.now(UTC)
        self.last_call_outcome = outcome


def _traced(
    options: types.HttpOptions | None, tracer_provider: TracerProvider
) -> types.HttpOptions:
    """Send the SDK's calls through httpx with client spans; the SDK builds and closes the client."""
    options = options or types.HttpOptions()
    client_args = dict(options.async_client_args or {})
    inner = client_args.get("transport") or httpx.AsyncHTTPTransport()
    client_args["transport"] = TracingTransport(inner, tracer_provider)
    return options.model_copy(update={"async_client_args": client_args})


def _seeds(spec: ImageSpec) -> range:
    # The Gemini API takes an int32 seed; MAX_SEED leaves room for seed + count - 1.
    return range(spec.seed, spec.seed + spec.count)


def _final_image(response: types.GenerateContentResponse) -> types.Blob:
    """Return the image of the first candidate, or raise why there is none.

    Thinking image models may send interim images marked as thoughts before the final one,
    so parts marked as thoughts are skipped.
    """
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise ContentPolicyViolation(stage="input", reason=_enum_name(feedback.block_reason))
    if not response.candidates:
        raise UpstreamError("The Gemini API returned no candidates and no block reason.")

    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    for part in parts:
        if part.inline_data is not None and part.inline_data.data and not part.thought:
            return part.inline_data

    finish_reason = _enum_name(candidate.finish_reason) if candidate.finish_reason else "none"
    if finish_reason in OUTPUT_BLOCK_REASONS:
        raise ContentPolicyViolation(stage="output", reason=finish_reason)
    raise UpstreamError(
        f"The Gemini API returned no image (finish reason {finish_reason}). Try again, "
        "or rephrase the prompt."
    )


def _inspect_image(data: bytes) -> tuple[int, int, str]:
    """Return the width, height and MIME type of encoded image bytes; reads only the header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            mime_type = image.get_format_mimetype() or "application/octet-stream"
    except (UnidentifiedImageError, OSError) as error:
        raise UpstreamError(
            "The Gemini API returned image data that could not be decoded. Try again."
        ) from error
    return width, height, mime_type


def _combine(results: Sequence[_CallResult], *, requested_model: str) -> BackendResult:
    model_versions = [result.model_version for result in results if result.model_version]
    return BackendResult(
        images=[result.image for result in results],
        model=model_versions[0] if model_versions else requested_model,
        input_tokens=_sum_known(result.input_tokens for result in results),
        output_tokens=_sum_known(result.output_tokens for result in results),
    )


def _sum_known(counts: Iterable[int | None]) -> int | None:
    """Sum the counts that are present, or return None when all of them are missing."""
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _error_details(error: errors.APIError) -> list[dict[str, Any]]:
    """Return the `details` list of Google's JSON error body, or an empty list."""
    body = error.details
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return []
    return [detail for detail in details if isinstance(detail, dict)]


def _retry_delay_s(error: errors.APIError) -> float | None:
    """Return the google.rpc.RetryInfo retryDelay of an error in seconds, if it has one."""
    for detail in _error_details(error):
        if detail.get("@type") != RETRY_INFO_TYPE:
            continue
        match = DURATION_PATTERN.match(str(detail.get("retryDelay", "")))
        if match:
            return float(match[1])
        logger.debug("Ignored a RetryInfo detail with an unreadable retryDelay: %s", detail)
    return None


def _is_api_key_invalid(error: errors.APIError) -> bool:
    if "API_KEY_INVALID" in (error.message or ""):
        return True
    return any(
        detail.get("@type") == ERROR_INFO_TYPE and detail.get("reason") == "API_KEY_INVALID"
        for detail in _error_details(error)
    )


def _enum_name(value: Any) -> str:
    """Return the name of an SDK enum value, or the value itself when it is a plain string."""
    return str(getattr(value, "name", value))


def _outcome_of(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, ContentPolicyViolation):
        return "blocked"
    if isinstance(error, RateLimitedError):
        return "rate_limited"
    if isinstance(error, UpstreamUnavailableError):
        return "unavailable"
    return "error"
