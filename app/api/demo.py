"""The demo page's generator: no account, the demo backend only, limited per client address.

The body is the one of `POST /api/v1/images/generations`, with the demo's limits on top: at
most DEMO_MAX_IMAGES images of the 1K size. Demo images belong to a system account, so they
appear in no customer's history; their signed URLs work like any other. Client addresses come
from X-Forwarded-For only when the peer is one of TRUSTED_PROXIES.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.accounts.keys import KeyMode, Principal
from app.api.clients import client_address
from app.api.deps import ServicesDep
from app.api.images import generation_body
from app.api.schemas.images import ImageGenerationCreate, ImageGenerationPublic
from app.errors import InvalidRequestError
from app.generation.options import ImageSize

router = APIRouter(tags=["demo"])

DEMO_MAX_IMAGES = 2


def check_demo_limits(body: ImageGenerationCreate) -> None:
    """Raise InvalidRequestError when the body asks for more than the demo gives."""
    if body.n > DEMO_MAX_IMAGES:
        raise InvalidRequestError(
            f"The demo makes at most {DEMO_MAX_IMAGES} images per request, not {body.n}. "
            "Set `n` to 1 or 2, or create an account for up to 4.",
            field="n",
            code="too_many_images",
            images_per_request=DEMO_MAX_IMAGES,
        )
    if body.image_size is not ImageSize.K1:
        raise InvalidRequestError(
            f"The demo makes 1K images only, not {body.image_size.value}. Leave out "
            "`image_size`, or create an account for 2K and 4K.",
            field="image_size",
            code="unsupported_image_size",
        )


@router.post(
    "/demo/generations", response_model=ImageGenerationPublic, response_model_exclude_none=True
)
async def create_demo_generation(
    body: ImageGenerationCreate, request: Request, services: ServicesDep
) -> ImageGenerationPublic:
    """Generate watermarked demo images without an API key."""
    check_demo_limits(body)
    address = client_address(request, services.settings.trusted_proxies)
    decision = await services.limiter.check_demo(address)
    request.state.rate_limit = decision
    if not decision.allowed:
        raise services.limiter.demo_rejection(decision)
    await services.limiter.count_demo_day(address, images=body.n)

    principal = Principal(
        key_id=None,
        account_id=request.app.state.demo_account_id,
        mode=KeyMode.TEST,  # test mode always uses the demo backend, whatever is configured
        scopes=frozenset(),
        role="system",
        plan="unlimited",
    )
    request_body = body.model_copy(update={"model": None}).to_request()
    outcome = await services.generation.generate(principal, request_body)
    return await generation_body(services, outcome, body.response_format)
