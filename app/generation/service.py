"""The generation service: one prompt in, stored images out.

The steps, in order: resolve the model and backend, claim the idempotency key, call the backend
under a timeout, store the bytes and the records, and release the idempotency key on failure.
The work runs in its own task, so a client that disconnects does not cancel a paid generation.
Its result is stored, and a retry with the same Idempotency-Key or the history finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.keys import Principal
from app.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ServiceError,
    UpstreamTimeoutError,
)
from app.generation.backend import BackendImage, BackendResult, ImageBackend, ImageSpec, ModelInfo
from app.generation.metrics import GenerationTelemetry
from app.generation.options import MAX_SEED, ImageSize, compose_prompt
from app.storage.blobs import ImageStore
from app.storage.ids import is_valid_id, new_id
from app.storage.tables import Generation, IdempotencyRecord, Image, utc_now

logger = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
IMAGE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class GenerationRequest:
    """A validated generation request, as the API or the CLI received it."""

    prompt: str
    count: int = 1
    aspect_ratio: str = "1:1"
    image_size: ImageSize = ImageSize.K1
    model: str | None = None
    negative_prompt: str | None = None
    style: str | None = None
    seed: int | None = None
    response_format: str = "url"
    end_user: str | None = None

    def fingerprint(self) -> str:
        """SHA-256 of the request's fields, to tell a retry from a different request."""
        canonical = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class GenerationOutcome:
    generation: Generation
    images: Sequence[Image]
    replayed: bool = False


@dataclass(frozen=True)
class ImagePage:
    images: Sequence[Image]
    next_cursor: str | None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Admission(Protocol):
    async def use(self) -> None:
        """Charge the generation, once its images are stored."""
        ...


class Gate(Protocol):
    """Admits a generation before its backend call and undoes the admission if it fails.

    `app.accounts.gate.GenerationGate` checks limits and reserves credits here.
    """

    def admit(
        self, principal: Principal, generation: Generation
    ) -> contextlib.AbstractAsyncContextManager[Admission]: ...


class _FreeAdmission:
    async def use(self) -> None:
        return None


class OpenGate:
    """Admits every generation for free: for tools and tests without accounts."""

    @contextlib.asynccontextmanager
    async def admit(self, principal: Principal, generation: Generation) -> AsyncIterator[Admission]:
        yield _FreeAdmission()


class GenerationService:
    """Runs generations and serves the stored images of each account."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: ImageStore,
        backends: Mapping[str, ImageBackend],
        live_backend: str,
        backend_timeout_s: float,
        request_timeout_s: float,
        gate: Gate | None = None,
        telemetry: GenerationTelemetry | None = None,
    ) -> None:
        self._sessions = sessions
        self._gate: Gate = gate or OpenGate()
        self._telemetry = telemetry or GenerationTelemetry()
        self._store = store
        self._backends = backends
        self._live_backend = live_backend
        self._backend_timeout_s = backend_timeout_s
        self._request_timeout_s = request_timeout_s
        self._in_flight: set[asyncio.Task[GenerationOutcome]] = set()

    @property
    def live_backend(self) -> ImageBackend:
        return self._backends[self._live_backend]

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    def models(self) -> Sequence[ModelInfo]:
        return self.live_backend.models()

    def backend_for(self, principal: Principal) -> ImageBackend:
        """Test keys always use the demo backend; live keys use the configured one."""
        return self._backends["demo"] if principal.is_test else self.live_backend

    def resolve_model(self, requested: str | None) -> str:
        offered = [model.id for model in self.models()]
        if requested is None:
            return offered[0]
        if requested not in offered:
            raise InvalidRequestError(
                f"Unknown model {requested!r}. Use one of {', '.join(offered)} "
                "(GET /api/v1/models lists them), or leave `model` out for the default.",
                field="model",
                code="unknown_model",
                models=offered,
            )
        return requested

    async def generate(
        self,
        principal: Principal,
        request: GenerationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> GenerationOutcome:
        """Generate and store images; shielded, so the caller's cancellation does not stop it."""
        model = self.resolve_model(request.model)
        backend = self.backend_for(principal)
        self._check_image_size(
            backend, model if not principal.is_test else None, request.image_size
        )
        task = asyncio.create_task(
            self._observed_generate(principal, request, backend, model, idempotency_key)
        )
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def wait_for_in_flight(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for running generations; return how many are still running."""
        pending = set(self._in_flight)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=timeout_s)
        return len(pending)

    def _check_image_size(self, backend: ImageBackend, model: str | None, size: ImageSize) -> None:
        for info in backend.models():
            if (model is None or info.id == model) and size not in info.image_sizes:
                offered = ", ".join(item.value for item in info.image_sizes)
                raise InvalidRequestError(
                    f"image_size {size.value!r} is not offered by model {info.id!r}; use {offered}.",
                    field="image_size",
                    code="unsupported_image_size",
                )

    async def _observed_generate(
        self,
        principal: Principal,
        request: GenerationRequest,
        backend: ImageBackend,
        model: str,
        idempotency_key: str | None,
    ) -> GenerationOutcome:
        with self._telemetry.generation(backend.name, model, request) as observation:
            outcome = await self._generate(principal, request, backend, model, idempotency_key)
            self._telemetry.finished(observation, outcome)
            return outcome

    async def _generate(
        self,
        principal: Principal,
        request: GenerationRequest,
        backend: ImageBackend,
        model: str,
        idempotency_key: str | None,
    ) -> GenerationOutcome:
        if idempotency_key is not None:
            replay = await self._claim_idempotency_key(
                principal.account_id, idempotency_key, request
            )
            if replay is not None:
                return replay
        try:
            outcome = await self._run_with_timeout(principal, request, backend, model)
        except BaseException:
            if idempotency_key is not None:
                await self._release_idempotency_key(principal.account_id, idempotency_key)
            raise
        if idempotency_key is not None:
            await self._complete_idempotency_key(
                principal.account_id, idempotency_key, outcome.generation.id
            )
        return outcome

    async def _run_with_timeout(
        self, principal: Principal, request: GenerationRequest, backend: ImageBackend, model: str
    ) -> GenerationOutcome:
        try:
            return await asyncio.wait_for(
                self._run(principal, request, backend, model), timeout=self._request_timeout_s
            )
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"The generation did not finish within {self._request_timeout_s:g} s. Try again."
            ) from None

    async def _run(
        self, principal: Principal, request: GenerationRequest, backend: ImageBackend, model: str
    ) -> GenerationOutcome:
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        spec = ImageSpec(
            prompt=compose_prompt(
                request.prompt, style=request.style, negative_prompt=request.negative_prompt
            ),
            model=model,
            aspect_ratio=request.aspect_ratio,
            image_size=request.image_size,
            count=request.count,
            seed=seed,
            style=request.style,
        )
        generation = Generation(
            id=new_id("gen"),
            account_id=principal.account_id,
            api_key_id=principal.key_id,
            status="running",
            backend=backend.name,
            model=model,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            style=request.style,
            aspect_ratio=request.aspect_ratio,
            image_size=request.image_size.value,
            image_count=request.count,
            seed=seed,
            end_user=request.end_user,
            created_at=utc_now(),
        )
        async with self._gate.admit(principal, generation) as admission:
            outcome = await self._produce(backend, spec, generation)
            await admission.use()
        return outcome

    async def _produce(
        self, backend: ImageBackend, spec: ImageSpec, generation: Generation
    ) -> GenerationOutcome:
        """Call the backend and store its images, or record the generation as failed."""
        started = time.perf_counter()
        try:
            result = await self._call_backend(backend, spec)
        except ServiceError as error:
            generation.status = "failed"
            generation.error_code = error.instance_code
            generation.duration_ms = round((time.perf_counter() - started) * 1000)
            await self._save_failed(generation)
            raise
        generation.status = "succeeded"
        generation.model = result.model
        generation.input_tokens = result.input_tokens
        generation.output_tokens = result.output_tokens
        generation.duration_ms = round((time.perf_counter() - started) * 1000)
        images = await self._store_images(generation, result.images)
        return GenerationOutcome(generation=generation, images=images)

    async def _call_backend(self, backend: ImageBackend, spec: ImageSpec) -> BackendResult:
        try:
            with self._telemetry.backend_call(backend.name, spec) as results:
                result = await asyncio.wait_for(
                    backend.generate(spec), timeout=self._backend_timeout_s
                )
                results.append(result)
                return result
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"The {backend.name} backend did not respond within {self._backend_timeout_s:g} s. "
                "Try again, or ask for fewer images."
            ) from None

    async def _store_images(
        self, generation: Generation, produced: Sequence[BackendImage]
    ) -> list[Image]:
        rows = []
        for position, produced_image in enumerate(produced):
            image_id = new_id("img")
            extension = IMAGE_EXTENSIONS.get(produced_image.mime_type, "bin")
            key = f"{generation.account_id}/{image_id}.{extension}"
            digest = await asyncio.to_thread(_sha256_hex, produced_image.data)
            await self._store.put(key, produced_image.data, produced_image.mime_type)
            rows.append(
                Image(
                    id=image_id,
                    generation_id=generation.id,
                    account_id=generation.account_id,
                    position=position,
                    width=produced_image.width,
                    height=produced_image.height,
                    seed=produced_image.seed,
                    content_type=produced_image.mime_type,
                    size_bytes=len(produced_image.data),
                    sha256=digest,
                    storage_key=key,
                    created_at=generation.created_at,
                )
            )
        try:
            async with self._sessions.begin() as session:
                session.add(generation)
                await session.flush()
                session.add_all(rows)
        except BaseException:
            # The records did not land, so the bytes would be orphans.
            for row in rows:
                await self._store.delete(row.storage_key)
            raise
        return rows

    async def _save_failed(self, generation: Generation) -> None:
        async with self._sessions.begin() as session:
            session.add(generation)

    async def _claim_idempotency_key(
        self, account_id: str, key: str, request: GenerationRequest
    ) -> GenerationOutcome | None:
        """Record the first use of `key`, or return the stored outcome of an earlier identical request."""
        fingerprint = request.fingerprint()
        now = utc_now()
        async with self._sessions.begin() as session:
            record = await session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key
                )
            )
            if record is not None and self._is_expired(record, now):
                await session.delete(record)
                await session.flush()
                record = None
            if record is None:
                session.add(
                    IdempotencyRecord(
                        account_id=account_id,
                        key=key,
                        request_sha256=fingerprint,
                        response_format=request.response_format,
                        created_at=now,
                    )
                )
                try:
                    await session.flush()
                except IntegrityError:
                    raise self._in_use(key) from None
                return None
        if record.request_sha256 != fingerprint:
            raise InvalidRequestError(
                f"The Idempotency-Key {key!r} was already used with a different request body. "
                "Use a new key for a new request.",
                code="idempotency_key_reused",
            )
        if record.generation_id is None:
            raise self._in_use(key)
        return await self._load_outcome(account_id, record.generation_id)

    def _is_expired(self, record: IdempotencyRecord, now: datetime) -> bool:
        if now - record.created_at > IDEMPOTENCY_WINDOW:
            return True
        # A claim with no result after the request timeout belongs to a process that died.
        abandoned_after = timedelta(seconds=self._request_timeout_s * 2)
        return record.generation_id is None and now - record.created_at > abandoned_after

    @staticmethod
    def _in_use(key: str) -> ConflictError:
        return ConflictError(
            f"A request with the Idempotency-Key {key!r} is still running. "
            "Retry after it finishes to get its result.",
            code="idempotency_key_in_use",
        )

    async def _complete_idempotency_key(
        self, account_id: str, key: str, generation_id: str
    ) -> None:
        async with self._sessions.begin() as session:
            record = await session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key
                )
            )
            if record is not None:
                record.generation_id = generation_id

    async def _release_idempotency_key(self, account_id: str, key: str) -> None:
        """Forget a claim whose request failed, so that a retry runs again."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.account_id == account_id,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.generation_id.is_(None),
                )
            )

    async def _load_outcome(self, account_id: str, generation_id: str) -> GenerationOutcome:
        async with self._sessions() as session:
            generation = await session.get(Generation, generation_id)
            images = (
                await session.scalars(
                    select(Image)
                    .where(Image.generation_id == generation_id)
                    .order_by(Image.position)
                )
            ).all()
        if generation is None or generation.account_id != account_id:
            raise NotFoundError(
                f"No generation with id {generation_id!r}.", code="generation_not_found"
            )
        return GenerationOutcome(generation=generation, images=list(images), replayed=True)

    async def get_image(self, account_id: str | None, image_id: str) -> Image:
        """Return an image of `account_id` (any account's when None); others are not found."""
        image = None
        if is_valid_id(image_id, "img"):
            async with self._sessions() as session:
                image = await session.get(Image, image_id)
        if image is None or (account_id is not None and image.account_id != account_id):
            raise NotFoundError(
                f"No image with id {image_id!r}. List your images with GET /api/v1/images.",
                code="image_not_found",
            )
        return image

    async def read_content(self, image: Image) -> bytes:
        return await self._store.get(image.storage_key)

    async def list_images(self, account_id: str, *, limit: int, cursor: str | None) -> ImagePage:
        """Return the account's images newest first; `cursor` is the last id of the previous page."""
        if cursor is not None and not is_valid_id(cursor, "img"):
            raise InvalidRequestError(
                f"Invalid cursor {cursor!r}: pass the `next_cursor` of the previous page.",
                field="cursor",
                code="invalid_cursor",
            )
        query = (
            select(Image)
            .where(Image.account_id == account_id)
            .order_by(Image.id.desc())
            .limit(limit + 1)
        )
        if cursor is not None:
            query = query.where(Image.id < cursor)
        async with self._sessions() as session:
            rows = list((await session.scalars(query)).all())
        has_more = len(rows) > limit
        rows = rows[:limit]
        return ImagePage(images=rows, next_cursor=rows[-1].id if has_more else None)

    async def delete_image(self, account_id: str, image_id: str) -> None:
        image = await self.get_image(account_id, image_id)
        async with self._sessions.begin() as session:
            await session.execute(delete(Image).where(Image.id == image.id))
        await self._store.delete(image.storage_key)

    async def delete_account_images(self, account_id: str, *, batch_size: int = 500) -> int:
        """Delete every image of the account, records first, then bytes; return the count."""
        return await self._delete_images_where(
            Image.account_id == account_id, batch_size, f"of account {account_id}"
        )

    async def delete_expired_images(self, older_than: datetime, *, batch_size: int = 500) -> int:
        """Delete images created before `older_than`, records first, then bytes; return the count."""
        return await self._delete_images_where(
            Image.created_at < older_than, batch_size, f"created before {older_than.isoformat()}"
        )

    async def _delete_images_where(
        self, condition: ColumnElement[bool], batch_size: int, description: str
    ) -> int:
        deleted = 0
        while True:
            async with self._sessions.begin() as session:
                rows = list(
                    (await session.scalars(select(Image).where(condition).limit(batch_size))).all()
                )
                if not rows:
                    return deleted
                await session.execute(delete(Image).where(Image.id.in_([row.id for row in rows])))
            for row in rows:
                await self._store.delete(row.storage_key)
            deleted += len(rows)
            logger.info("deleted %s images %s", len(rows), description)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
