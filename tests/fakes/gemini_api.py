"""A fake of the Gemini API's generateContent endpoint, for tests of the real google-genai SDK.

`FakeGeminiAPI` serves `POST /{version}/models/{model}:generateContent` on 127.0.0.1 from a
background thread. Point the SDK at it with `types.HttpOptions(base_url=fake.base_url)`.

Each request gets the reply of the first rule whose text occurs in the prompt, else the next
queued reply, else `default_reply`. Every request is recorded with its arrival time, so a test
can check what the SDK sent and when.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from app.generation.options import PIXELS_AT_1K, ImageSize, pixel_size

TEST_API_KEY = "test-gemini-key-7f3a9c"
API_KEY_HEADER = "x-goog-api-key"
REDACTED = "<redacted>"
GENERATE_CONTENT_PATH = re.compile(
    r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$"
)
POLL_INTERVAL_S = 0.02
# Idle keep-alive connections are closed after this long, so no handler thread lingers.
IDLE_CONNECTION_TIMEOUT_S = 10.0
THOUGHT_IMAGE_PIXELS = (64, 64)
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class ImageReply:
    """A generated image of the aspect ratio and image size that the request names.

    `model_version` is sent as `modelVersion` after `{model}` is replaced by the requested model
    id, and None leaves the field out. `thought_image` puts an interim thought text and a 64x64
    thought image before the final image, as thinking image models do.
    """

    mime_type: str = "image/png"
    model_version: str | None = "{model}"
    thought_image: bool = False
    prompt_tokens: int = 14
    output_tokens: int = 1290
    delay_s: float = 0.0


@dataclass(frozen=True)
class JsonReply:
    """A fixed HTTP status and JSON body, sent after `delay_s` seconds."""

    status: int
    body: dict[str, Any]
    delay_s: float = 0.0


Reply = ImageReply | JsonReply


@dataclass
class RecordedRequest:
    """One request as the fake received it. Times come from `time.monotonic()`."""

    method: str
    path: str
    version: str | None
    model: str | None
    headers: dict[str, str]  # lower-case names, with the API key's value replaced by REDACTED
    body: dict[str, Any]
    arrived_at: float
    answered_at: float | None = None
    disconnected_at: float | None = None  # set when the client disconnected before the reply

    @property
    def prompt(self) -> str:
        """Join the text parts of every content in the request body."""
        texts = [
            part["text"]
            for content in self.body.get("contents", [])
            for part in content.get("parts", [])
            if "text" in part
        ]
        return "\n".join(texts)

    @property
    def generation_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.body.get("generationConfig", {})
        return config


# Replies for the outcomes that the Gemini API reports. The error bodies follow Google's JSON
# error format: {"error": {"code", "message", "status", "details"}}.


def google_error(
    status: int, status_name: str, message: str, details: list[dict[str, Any]] | None = None
) -> JsonReply:
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if details is not None:
        error["details"] = details
    return JsonReply(status, {"error": error})


def blocked_prompt(reason: str = "SAFETY") -> JsonReply:
    """HTTP 200 with `promptFeedback.blockReason` and no candidates."""
    return JsonReply(
        200,
        {
            "promptFeedback": {"blockReason": reason},
            "usageMetadata": {"promptTokenCount": 14, "totalTokenCount": 14},
        },
    )


def blocked_image(finish_reason: str = "IMAGE_SAFETY") -> JsonReply:
    """HTTP 200 with a candidate that has `finishReason` and no image."""
    return JsonReply(
        200,
        {
            "candidates": [{"finishReason": finish_reason, "index": 0}],
            "usageMetadata": {"promptTokenCount": 14, "totalTokenCount": 14},
        },
    )


def text_only(text: str, finish_reason: str = "STOP") -> JsonReply:
    """HTTP 200 with a candidate that has a text part and no image."""
    return JsonReply(
        200,
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": {"promptTokenCount": 14, "candidatesTokenCount": 9},
        },
    )


def unreadable_image() -> JsonReply:
    """HTTP 200 with an inline "image" whose bytes no image library can decode."""
    data = base64.b64encode(b"these bytes are not an image").decode()
    return JsonReply(
        200,
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": data}}],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ]
        },
    )


def rate_limited(retry_delay: str | None = "47s") -> JsonReply:
    """HTTP 429 RESOURCE_EXHAUSTED, with a RetryInfo detail unless `retry_delay` is None."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                }
            ],
        }
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        details,
    )


def server_error() -> JsonReply:
    return google_error(500, "INTERNAL", "An internal error has occurred. Please retry or report.")


def overloaded() -> JsonReply:
    return google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def unauthenticated() -> JsonReply:
    return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")


def permission_denied() -> JsonReply:
    """HTTP 403, which the Gemini API returns for a request without an API key."""
    return google_error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def api_key_invalid() -> JsonReply:
    """HTTP 400 with reason API_KEY_INVALID, which the Gemini API returns for an unknown key."""
    return google_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def invalid_argument(message: str) -> JsonReply:
    return google_error(400, "INVALID_ARGUMENT", message)


def model_not_found(model: str, version: str = "v1") -> JsonReply:
    return google_error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version {version}, "
        "or is not supported for generateContent.",
    )


@functools.lru_cache(maxsize=32)
def render_image(width: int, height: int, mime_type: str = "image/png") -> bytes:
    """Encode a plain image of `width` x `height` pixels in `mime_type`."""
    image = Image.new("RGB", (width, height), (38, 110, 190))
    buffer = io.BytesIO()
    image.save(buffer, format=IMAGE_FORMATS[mime_type])
    return buffer.getvalue()


def _inline_image(width: int, height: int, mime_type: str) -> dict[str, str]:
    data = base64.b64encode(render_image(width, height, mime_type)).decode()
    return {"mimeType": mime_type, "data": data}


def _peer_closed(connection: socket.socket) -> bool:
    """Return True when the client has closed its end of `connection`."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping never blocks stop() or interpreter exit

    def __init__(self, fake: FakeGeminiAPI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.fake._record_handler_error()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    # The headers and the body go out in two writes. With Nagle's algorithm the body would
    # wait for the client's delayed ACK of the headers, adding about 40 ms to every reply.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of one access-log line per request."""


class FakeGeminiAPI:
    """The Gemini API's generateContent endpoint on 127.0.0.1, scripted per test.

    With `api_key` set, a request without the `x-goog-api-key` header gets HTTP 403 and one
    with another key gets HTTP 400 API_KEY_INVALID, as from the real API. Use it as a context
    manager, or call `start()` and `stop()`.
    """

    def __init__(self, *, api_key: str | None = TEST_API_KEY) -> None:
        self.api_key = api_key
        self.default_reply: Reply = ImageReply()
        self.requests: list[RecordedRequest] = []
        self.handler_errors: list[BaseException] = []
        self._queue: deque[Reply] = deque()
        self._rules: list[tuple[str, Reply]] = []
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("The fake Gemini API is not running; call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-gemini-api",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving. Handlers that are still sleeping wake up and close without replying."""
        self._stopping.set()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeGeminiAPI:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def enqueue(self, *replies: Reply) -> None:
        """Reply to the next requests with `replies`, in order of arrival."""
        with self._condition:
            self._queue.extend(replies)

    def reply_when_prompt_contains(self, text: str, reply: Reply) -> None:
        """Reply with `reply` to every request whose prompt contains `text`."""
        with self._condition:
            self._rules.append((text, reply))

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` is true and return True, or return False after `timeout_s`.

        The predicate is checked after each arrival, reply and disconnect.
        """
        with self._condition:
            return self._condition.wait_for(predicate, timeout=timeout_s)

    def _handle(self, handler: _Handler) -> None:
        record = self._record(handler)
        reply = self._choose_reply(record, handler.headers.get(API_KEY_HEADER))
        if not self._wait_before_reply(handler.connection, reply.delay_s, record):
            handler.close_connection = True
            return

        status, body = self._render(reply, record)
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()
        with self._condition:
            record.answered_at = time.monotonic()
            self._condition.notify_all()

    def _record(self, handler: _Handler) -> RecordedRequest:
        length = int(handler.headers.get("Content-Length", "0"))
        raw_body = handler.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in handler.headers.items()}
        if API_KEY_HEADER in headers:
            headers[API_KEY_HEADER] = REDACTED
        match = GENERATE_CONTENT_PATH.match(urlsplit(handler.path).path)
        record = RecordedRequest(
            method=handler.command,
            path=handler.path,
            version=match["version"] if match else None,
            model=match["model"] if match else None,
            headers=headers,
            body=json.loads(raw_body) if raw_body else {},
            arrived_at=time.monotonic(),
        )
        with self._condition:
            self.requests.append(record)
            self._condition.notify_all()
        return record

    def _choose_reply(self, record: RecordedRequest, api_key: str | None) -> Reply:
        if record.model is None:
            return google_error(404, "NOT_FOUND", f"The path {record.path} is not served.")
        if self.api_key is not None and api_key is None:
            return permission_denied()
        if self.api_key is not None and api_key != self.api_key:
            return api_key_invalid()
        with self._condition:
            for text, reply in self._rules:
                if text in record.prompt:
                    return reply
            return self._queue.popleft() if self._queue else self.default_reply

    def _wait_before_reply(
        self, connection: socket.socket, delay_s: float, record: RecordedRequest
    ) -> bool:
        """Sleep `delay_s` in short steps and return True.

        Return False early when the fake stops or the client disconnects.
        """
        deadline = time.monotonic() + delay_s
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopping.wait(min(POLL_INTERVAL_S, remaining)):
                return False
            if _peer_closed(connection):
                with self._condition:
                    record.disconnected_at = time.monotonic()
                    self._condition.notify_all()
                return False
        return True

    def _render(self, reply: Reply, record: RecordedRequest) -> tuple[int, dict[str, Any]]:
        if isinstance(reply, JsonReply):
            return reply.status, reply.body
        image_config = record.generation_config.get("imageConfig", {})
        aspect_ratio = image_config.get("aspectRatio", "1:1")
        image_size = image_config.get("imageSize", ImageSize.K1.value)
        if aspect_ratio not in PIXELS_AT_1K or image_size not in {size.value for size in ImageSize}:
            invalid = invalid_argument(
                f"Unsupported image config: aspectRatio {aspect_ratio!r}, imageSize {image_size!r}."
            )
            return invalid.status, invalid.body
        return 200, self._image_body(reply, record, pixel_size(aspect_ratio, ImageSize(image_size)))

    def _image_body(
        self, reply: ImageReply, record: RecordedRequest, size: tuple[int, int]
    ) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if reply.thought_image:
            parts.append({"text": "Planning the composition.", "thought": True})
            thought = _inline_image(*THOUGHT_IMAGE_PIXELS, "image/png")
            parts.append({"inlineData": thought, "thought": True})
        parts.append({"inlineData": _inline_image(*size, reply.mime_type)})
        body: dict[str, Any] = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": reply.prompt_tokens,
                "candidatesTokenCount": reply.output_tokens,
                "totalTokenCount": reply.prompt_tokens + reply.output_tokens,
            },
            "responseId": f"fake-response-{len(self.requests)}",
        }
        if reply.model_version is not None:
            body["modelVersion"] = reply.model_version.format(model=record.model)
        return body

    def _record_handler_error(self) -> None:
        """Store errors of the fake itself for the test to check, except clients that disconnected."""
        error = sys.exception()
        if error is None or isinstance(error, ConnectionError):
            return
        with self._condition:
            self.handler_errors.append(error)
            self._condition.notify_all()
