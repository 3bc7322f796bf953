"""Image routes: generate, list, read metadata and content, delete; and the model list."""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import Response as RawResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.accounts.keys import Scope
from app.api.deps import GeneratorDep, ReaderDep, ServicesDep, authenticate, bearer_token
from app.api.schemas.images import (
    GeneratedImagePublic,
    GenerationUsage,
    ImageGenerationCreate,
    ImageGenerationPublic,
    ImageListPublic,
    ImagePublic,
    InputTokensDetails,
    ModelListPublic,
    ModelPublic,
)
from app.container import Services
from app.errors import AuthenticationError, InvalidRequestError
from app.generation.options import ASPECT_RATIOS, compose_prompt
from app.generation.service import GenerationOutcome
from app.storage.tables import Image

router = APIRouter(tags=["images"])

IDEMPOTENCY_KEY_MAX_CHARS = 255
IMAGE_CACHE_CONTROL = "private, max-age=86400, immutable"


def image_url(services: Services, image_id: str) -> str:
    """Build an absolute, signed and expiring URL of the image's content."""
    expires_at = int(time.time()) + services.settings.signed_url_ttl_s
    signature = services.signer.sign(image_id, expires_at)
    base = services.settings.resolved_public_base_url
    return f"{base}/api/v1/images/{image_id}/content?expires={expires_at}&signature={signature}"


async def generation_body(
    services: Services, outcome: GenerationOutcome, response_format: str
) -> ImageGenerationPublic:
    generation = outcome.generation
    revised = compose_prompt(
        generation.prompt, style=generation.style, negative_prompt=generation.negative_prompt
    )
    data = []
    for image in outcome.images:
        item = GeneratedImagePublic(
            id=image.id,
            width=image.width,
            height=image.height,
            seed=image.seed,
            revised_prompt=revised,
        )
        if response_format == "b64_json":
            item.b64_json = base64.b64encode(await services.generation.read_content(image)).decode()
        else:
            item.url = image_url(services, image.id)
        data.append(item)
    input_tokens = generation.input_tokens or 0
    output_tokens = generation.output_tokens or 0
    return ImageGenerationPublic(
        created=int(generation.created_at.timestamp()),
        id=generation.id,
        backend=generation.backend,
        model=generation.model,
        data=data,
        usage=GenerationUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            input_tokens_details=InputTokensDetails(text_tokens=input_tokens, image_tokens=0),
            images=len(data),
        ),
    )


@router.post(
    "/images/generations", response_model=ImageGenerationPublic, response_model_exclude_none=True
)
async def create_generation(
    body: ImageGenerationCreate,
    principal: GeneratorDep,
    services: ServicesDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> ImageGenerationPublic:
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_CHARS:
        raise InvalidRequestError(
            f"The Idempotency-Key header must have 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters.",
            field="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    outcome = await services.generation.generate(
        principal, body.to_request(), idempotency_key=idempotency_key
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await generation_body(services, outcome, body.response_format)


@router.get("/images/generations", include_in_schema=False)
async def generations_need_post() -> None:
    """Answer 405 rather than letting `/images/{image_id}` treat "generations" as an id."""
    raise StarletteHTTPException(405, headers={"Allow": "POST"})


def _image_public(services: Services, image: Image) -> ImagePublic:
    return ImagePublic(
        id=image.id,
        generation_id=image.generation_id,
        created=int(image.created_at.timestamp()),
        width=image.width,
        height=image.height,
        seed=image.seed,
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        url=image_url(services, image.id),
    )


@router.get("/images", response_model=ImageListPublic)
async def list_images(
    principal: ReaderDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ImageListPublic:
    page = await services.generation.list_images(principal.account_id, limit=limit, cursor=cursor)
    return ImageListPublic(
        data=[_image_public(services, image) for image in page.images],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get("/images/{image_id}", response_model=ImagePublic)
async def get_image(image_id: str, principal: ReaderDep, services: ServicesDep) -> ImagePublic:
    image = await services.generation.get_image(principal.account_id, image_id)
    return _image_public(services, image)


@router.get(
    "/images/{image_id}/content",
    response_class=RawResponse,
    responses={200: {"content": {"image/png": {}}}, 304: {"description": "Not modified"}},
)
async def get_image_content(
    image_id: str,
    request: Request,
    services: ServicesDep,
    expires: Annotated[int | None, Query()] = None,
    signature: Annotated[str | None, Query(max_length=100)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> RawResponse:
    """Return the image bytes, for a signed URL or for an API key with the images:read scope."""
    if expires is not None and signature is not None and bearer_token(request) is None:
        if not services.signer.verify(image_id, expires, signature, now=time.time()):
            raise AuthenticationError(
                "The image link is invalid or has expired. Fetch a fresh URL from "
                "GET /api/v1/images/{id}.",
                code="invalid_image_signature",
            )
        image = await services.generation.get_image(None, image_id)
    else:
        principal = await authenticate(request, services)
        principal.require(Scope.IMAGES_READ)
        image = await services.generation.get_image(principal.account_id, image_id)

    etag = f'"{image.sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE_CONTROL}
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return RawResponse(status_code=304, headers=headers)
    content = await services.generation.read_content(image)
    return RawResponse(content=content, media_type=image.content_type, headers=headers)


@router.delete("/images/{image_id}", status_code=204, response_class=RawResponse)
async def delete_image(image_id: str, principal: ReaderDep, services: ServicesDep) -> RawResponse:
    principal.require(Scope.IMAGES_GENERATE)
    await services.generation.delete_image(principal.account_id, image_id)
    return RawResponse(status_code=204)


@router.get("/models", response_model=ModelListPublic)
async def list_models(principal: ReaderDep, services: ServicesDep) -> ModelListPublic:
    return ModelListPublic(
        data=[
            ModelPublic(
                id=model.id,
                created=0,
                owned_by="google" if model.backend == "gemini" else "visioncraft",
                backend=model.backend,
                image_sizes=[size.value for size in model.image_sizes],
                aspect_ratios=list(ASPECT_RATIOS),
                description=model.description,
            )
            for model in services.generation.models()
        ]
    )
