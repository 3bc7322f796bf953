"""The demo page's generator: no account, the demo backend only, limited per client address.

Demo images belong to a system account, so they appear in no customer's history; their
signed URLs work like any other. Client addresses come from X-Forwarded-For only when the
peer is one of TRUSTED_PROXIES.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.accounts.keys import KeyMode, Principal
from app.api.deps import ServicesDep
from app.api.images import generation_body
from app.api.schemas.images import (
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    ImageGenerationCreate,
    ImageGenerationPublic,
)
from app.generation.options import ASPECT_RATIOS, MAX_SEED, STYLES

router = APIRouter(tags=["demo"])

Network = IPv4Network | IPv6Network


class DemoGenerationCreate(BaseModel):
    """One 1K image from the demo backend, returned as a signed URL.

    The fields are those of `POST /images/generations` that the demo offers, so the generator
    page sends the same body to either route; `n` may only be 1.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description=f"What to draw; 1 to {MAX_PROMPT_CHARS} characters.")
    negative_prompt: str | None = Field(None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    aspect_ratio: str | None = Field(None, description=f"One of {', '.join(ASPECT_RATIOS)}.")
    style: str | None = Field(None, description=f"One of {', '.join(STYLES)}.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: Literal[1] = Field(1, description="The demo draws one image per request.")
    response_format: Literal["url"] = "url"

    def to_generation(self) -> ImageGenerationCreate:
        """Reuse the generation body's checks and defaults, with everything else fixed."""
        return ImageGenerationCreate(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            aspect_ratio=self.aspect_ratio,
            style=self.style,
            seed=self.seed,
        )


def _is_trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in proxies)


def client_address(request: Request, proxies: Sequence[Network]) -> str:
    """Return the client's address: the peer, or behind trusted proxies the last untrusted hop.

    X-Forwarded-For is read from the right, because each proxy appends the address it saw.
    Entries left of the rightmost untrusted hop could be written by the client itself.
    """
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or not _is_trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


@router.post(
    "/demo/generations", response_model=ImageGenerationPublic, response_model_exclude_none=True
)
async def create_demo_generation(
    body: DemoGenerationCreate, request: Request, services: ServicesDep
) -> ImageGenerationPublic:
    """Generate one watermarked demo image without an API key."""
    generation_request = body.to_generation().to_request()
    address = client_address(request, services.settings.trusted_proxies)
    decision = await services.limiter.check_demo(address)
    request.state.rate_limit = decision
    if not decision.allowed:
        raise services.limiter.demo_rejection(decision)
    await services.limiter.count_demo_day(address)

    principal = Principal(
        key_id=None,
        account_id=request.app.state.demo_account_id,
        mode=KeyMode.TEST,  # test mode always uses the demo backend, whatever is configured
        scopes=frozenset(),
        role="system",
        plan="unlimited",
    )
    outcome = await services.generation.generate(principal, generation_request)
    return await generation_body(services, outcome, "url")
