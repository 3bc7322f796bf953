"""A fake of the Cloud Storage JSON API, for tests of the real google-cloud-storage client.

`FakeCloudStorage` serves on 127.0.0.1, from a background thread, the requests that
google-cloud-storage 3.17 sends for the `gcs` image store (seen by logging every request of
that client version):

- `GET /storage/v1/b/{bucket}`: bucket metadata. The client also fetches it in a background
  thread on its first call to a bucket, to label its spans.
- `GET /storage/v1/b/{bucket}/o`: list objects, with `prefix`, `maxResults` and `pageToken`.
- `GET /storage/v1/b/{bucket}/o/{object}`: object metadata.
- `GET /download/storage/v1/b/{bucket}/o/{object}?alt=media`: object bytes, with the
  `X-Goog-Hash` header that the client checks the bytes against.
- `POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart`: uploads up to 8 MiB.
  `uploadType=media` and `uploadType=resumable` (then `PUT` with `upload_id`) for larger ones.
- `DELETE /storage/v1/b/{bucket}/o/{object}`.

Point the client at it with `STORAGE_EMULATOR_HOST=fake.base_url`; the client then sends no
credentials unless given some. Errors use the JSON API's body
`{"error": {"code", "message", "errors": [{"reason", "message", "domain"}]}}`, and an upload
with `ifGenerationMatch` that does not match gets 412, as Cloud Storage does.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import google_crc32c

JSON_API_PATH = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)(?:/o(?:/(?P<object>.+))?)?$")
DOWNLOAD_PATH = re.compile(r"^/download/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<object>.+)$")
UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
CONTENT_RANGE = re.compile(r"^bytes (?:(?P<first>\d+)-(?P<last>\d+)|\*)/(?P<total>\d+|\*)$")
DEFAULT_PAGE_SIZE = 1000
# Idle keep-alive connections are closed after this long, so no handler thread lingers.
IDLE_CONNECTION_TIMEOUT_S = 10.0


@dataclass
class StoredObject:
    name: str
    data: bytes
    content_type: str
    generation: int
    time_created: datetime

    def resource(self, bucket: str) -> dict[str, Any]:
        """Return the JSON API's object resource, with the checksums the client verifies."""
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{self.name}/{self.generation}",
            "name": self.name,
            "bucket": bucket,
            "generation": str(self.generation),
            "metageneration": "1",
            "contentType": self.content_type,
            "size": str(len(self.data)),
            "md5Hash": md5_base64(self.data),
            "crc32c": crc32c_base64(self.data),
            "timeCreated": _rfc3339(self.time_created),
            "updated": _rfc3339(self.time_created),
            "storageClass": "STANDARD",
        }


@dataclass(frozen=True)
class ErrorReply:
    """An error that the fake sends to the next request of one kind, as Cloud Storage would."""

    status: int
    reason: str
    message: str


@dataclass
class RecordedRequest:
    """One request as the fake received it: `kind` is upload, download, delete, list, get or bucket."""

    method: str
    path: str
    kind: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    status: int = 0


@dataclass
class _ResumableSession:
    bucket: str
    name: str
    content_type: str
    if_generation_match: str | None
    received: bytearray = field(default_factory=bytearray)


def md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - GCS's md5Hash


def crc32c_base64(data: bytes) -> str:
    """Return CRC32C of `data` as Cloud Storage writes it: base64 of the big-endian 4 bytes."""
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def not_found(message: str) -> ErrorReply:
    return ErrorReply(404, "notFound", message)


def service_unavailable() -> ErrorReply:
    return ErrorReply(503, "backendError", "We encountered an internal error. Please try again.")


def forbidden(action: str = "storage.objects.create") -> ErrorReply:
    return ErrorReply(
        403,
        "forbidden",
        f"visioncraft@example.iam.gserviceaccount.com does not have {action} access to the "
        "Google Cloud Storage object. Permission denied.",
    )


ANONYMOUS_CALLER = ErrorReply(
    401,
    "required",
    "Anonymous caller does not have storage.objects.list access to the Google Cloud Storage "
    "bucket. Permission denied.",
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each reply waits ~40 ms for the client's delayed ACK
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(IDLE_CONNECTION_TIMEOUT_S)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _dispatch(self) -> None:
        try:
            self.server.fake._handle(self)
        except Exception:
            self.server.fake._record_handler_error()
            raise

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeCloudStorage) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeCloudStorage:
    """An in-memory Cloud Storage with the buckets named at creation.

    Set `required_token` to reject requests without `Authorization: Bearer <token>` (401),
    as Cloud Storage rejects an anonymous caller on a private bucket. `fail_next` makes the
    next requests of one kind fail. Every request is recorded in `requests`.
    """

    def __init__(self, *buckets: str) -> None:
        self.buckets: dict[str, dict[str, StoredObject]] = {name: {} for name in buckets}
        self.required_token: str | None = None
        self.requests: list[RecordedRequest] = []
        self.handler_errors: list[BaseException] = []
        self._failures: dict[str, deque[ErrorReply]] = {}
        self._sessions: dict[str, _ResumableSession] = {}
        self._generations = itertools.count(1_700_000_000_000_001)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("The fake Cloud Storage is not running; call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-cloud-storage",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeCloudStorage:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def fail_next(self, kind: str, *replies: ErrorReply) -> None:
        """Fail the next requests of `kind` (upload, download, delete, list, get) with `replies`."""
        with self._lock:
            self._failures.setdefault(kind, deque()).extend(replies)

    def objects(self, bucket: str) -> dict[str, StoredObject]:
        """Return a copy of the objects in `bucket`, by name."""
        with self._lock:
            return dict(self.buckets[bucket])

    def put_object(self, bucket: str, name: str, data: bytes, content_type: str) -> None:
        """Store an object directly, as another writer of the bucket would."""
        with self._lock:
            self._store(bucket, name, data, content_type)

    def requests_of(self, kind: str) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self.requests if request.kind == kind]

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        record = RecordedRequest(
            method=handler.command,
            path=parts.path,
            kind=_kind(handler.command, parts.path),
            query=query,
            headers={name.lower(): value for name, value in handler.headers.items()},
        )
        with self._lock:
            self.requests.append(record)
            status, headers, payload = self._reply(record, handler, body)
            record.status = status
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    def _reply(
        self, record: RecordedRequest, handler: _Handler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Return the status, headers and body for one request. The caller holds the lock."""
        expected_authorization = f"Bearer {self.required_token}"
        if self.required_token is not None and record.headers.get("authorization") != (
            expected_authorization
        ):
            return _error(ANONYMOUS_CALLER)

        failures = self._failures.get(record.kind)
        if failures:
            return _error(failures.popleft())
        if record.kind == "upload":
            return self._upload(record, handler, body)

        match = DOWNLOAD_PATH.match(record.path) or JSON_API_PATH.match(record.path)
        if match is None:
            return _error(not_found(f"The path {record.path} is not served by this fake."))
        bucket = unquote(match["bucket"])
        if bucket not in self.buckets:
            return _error(not_found("The specified bucket does not exist."))
        name = unquote(match["object"]) if match["object"] else None
        if record.kind == "bucket":
            return _json(200, {"kind": "storage#bucket", "name": bucket, "location": "US"})
        if record.kind == "list":
            return self._list(bucket, record.query)
        return self._object(record, bucket, name or "")

    def _object(
        self, record: RecordedRequest, bucket: str, name: str
    ) -> tuple[int, dict[str, str], bytes]:
        stored = self.buckets[bucket].get(name)
        if stored is None:
            return _error(not_found(f"No such object: {bucket}/{name}"))
        if record.kind == "delete":
            del self.buckets[bucket][name]
            return 204, {}, b""
        if record.kind == "get" and record.query.get("alt") != "media":
            return _json(200, stored.resource(bucket))
        headers = {
            "Content-Type": stored.content_type,
            "X-Goog-Hash": f"crc32c={crc32c_base64(stored.data)},md5={md5_base64(stored.data)}",
            "X-Goog-Generation": str(stored.generation),
            "X-Goog-Stored-Content-Length": str(len(stored.data)),
            "X-Goog-Stored-Content-Encoding": "identity",
        }
        return 200, headers, stored.data

    def _list(self, bucket: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        prefix = query.get("prefix", "")
        page_size = int(query.get("maxResults", DEFAULT_PAGE_SIZE))
        names = sorted(name for name in self.buckets[bucket] if name.startswith(prefix))
        start = query.get("pageToken")
        if start is not None:
            names = [name for name in names if name >= start]
        page, rest = names[:page_size], names[page_size:]
        body: dict[str, Any] = {
            "kind": "storage#objects",
            "items": [self.buckets[bucket][name].resource(bucket) for name in page],
        }
        if rest:
            body["nextPageToken"] = rest[0]
        return _json(200, body)

    def _upload(
        self, record: RecordedRequest, handler: _Handler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        match = UPLOAD_PATH.match(record.path)
        if match is None:
            return _error(not_found(f"The path {record.path} is not served by this fake."))
        bucket = unquote(match["bucket"])
        if bucket not in self.buckets:
            return _error(not_found("The specified bucket does not exist."))
        upload_type = record.query.get("uploadType")
        if upload_type == "multipart":
            metadata, data, content_type = _parse_multipart(record.headers, body)
            return self._finish_upload(bucket, metadata, data, content_type, record.query)
        if upload_type == "media":
            metadata = {"name": record.query.get("name", "")}
            content_type = record.headers.get("content-type", "application/octet-stream")
            return self._finish_upload(bucket, metadata, body, content_type, record.query)
        if upload_type == "resumable":
            return self._resumable(record, handler, bucket, body)
        return _error(ErrorReply(400, "invalid", f"Unsupported uploadType {upload_type!r}."))

    def _resumable(
        self, record: RecordedRequest, handler: _Handler, bucket: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if record.method == "POST":
            return self._start_resumable(record, handler, bucket, body)

        session = self._sessions.get(record.query.get("upload_id", ""))
        if session is None:
            return _error(not_found("No such upload session."))
        content_range = CONTENT_RANGE.match(record.headers.get("content-range", ""))
        if content_range is None:
            return _error(ErrorReply(400, "invalid", "Missing or invalid Content-Range."))
        session.received.extend(body)
        total = content_range["total"]
        if total == "*" or len(session.received) < int(total):
            return 308, {"Range": f"bytes=0-{len(session.received) - 1}"}, b""
        del self._sessions[record.query["upload_id"]]
        query = {"ifGenerationMatch": session.if_generation_match or ""}
        metadata = {"name": session.name}
        return self._finish_upload(
            session.bucket, metadata, bytes(session.received), session.content_type, query
        )

    def _start_resumable(
        self, record: RecordedRequest, handler: _Handler, bucket: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Open an upload session and return its URL in `Location`, as Cloud Storage does."""
        metadata = json.loads(body or b"{}")
        upload_id = secrets.token_hex(8)
        self._sessions[upload_id] = _ResumableSession(
            bucket=bucket,
            name=metadata.get("name") or record.query.get("name", ""),
            content_type=record.headers.get("x-upload-content-type", "application/octet-stream"),
            if_generation_match=record.query.get("ifGenerationMatch"),
        )
        host = handler.headers.get("Host", "127.0.0.1")
        location = (
            f"http://{host}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
            f"?uploadType=resumable&upload_id={upload_id}"
        )
        return 200, {"Location": location}, b""

    def _finish_upload(
        self,
        bucket: str,
        metadata: dict[str, Any],
        data: bytes,
        content_type: str,
        query: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        name = metadata.get("name") or ""
        if not name:
            return _error(ErrorReply(400, "required", "Required parameter: name"))
        expected_crc32c = metadata.get("crc32c")
        if expected_crc32c is not None and expected_crc32c != crc32c_base64(data):
            return _error(
                ErrorReply(400, "invalid", "Provided CRC32C does not match the object's data.")
            )
        if_generation_match = query.get("ifGenerationMatch")
        if if_generation_match:
            current = self.buckets[bucket].get(name)
            current_generation = current.generation if current is not None else 0
            if int(if_generation_match) != current_generation:
                return _error(
                    ErrorReply(
                        412,
                        "conditionNotMet",
                        "At least one of the pre-conditions you specified did not hold.",
                    )
                )
        stored = self._store(bucket, name, data, metadata.get("contentType") or content_type)
        return _json(200, stored.resource(bucket))

    def _store(self, bucket: str, name: str, data: bytes, content_type: str) -> StoredObject:
        stored = StoredObject(
            name=name,
            data=data,
            content_type=content_type,
            generation=next(self._generations),
            time_created=datetime.now(UTC),
        )
        self.buckets[bucket][name] = stored
        return stored

    def _record_handler_error(self) -> None:
        """Store errors of the fake itself for the test to check, except clients that disconnected."""
        error = sys.exception()
        if error is None or isinstance(error, ConnectionError):
            return
        with self._lock:
            self.handler_errors.append(error)


def _kind(method: str, path: str) -> str:
    if path.startswith("/upload/"):
        return "upload"
    if path.startswith("/download/"):
        return "download"
    match = JSON_API_PATH.match(path)
    if match is None:
        return "unknown"
    if match["object"]:
        return {"DELETE": "delete", "GET": "get"}.get(method, "unknown")
    if path.endswith("/o"):
        return "list"
    return "bucket"


def _parse_multipart(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], bytes, str]:
    """Split a `multipart/related` upload into its JSON metadata, media bytes and media type."""
    boundary_match = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
    if boundary_match is None:
        raise ValueError("multipart upload without a boundary")
    delimiter = b"--" + boundary_match[1].encode()
    sections = body.split(delimiter)[1:-1]  # the text before the first and after the last
    parsed = []
    for section in sections:
        head, _, content = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part_headers = dict(
            line.split(": ", 1) for line in head.decode().lower().split("\r\n") if line
        )
        parsed.append((part_headers, content.removesuffix(b"\r\n")))
    (_, metadata_bytes), (media_headers, media) = parsed
    return json.loads(metadata_bytes), media, media_headers.get("content-type", "")


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


def _error(reply: ErrorReply) -> tuple[int, dict[str, str], bytes]:
    return _json(
        reply.status,
        {
            "error": {
                "code": reply.status,
                "message": reply.message,
                "errors": [{"message": reply.message, "domain": "global", "reason": reply.reason}],
            }
        },
    )
