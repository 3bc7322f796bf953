"""The user dashboard: plan and balance, usage chart, API keys, image history and billing.

The page is rendered on the server from the same services as the JSON API, so one page load
costs no API request against the plan's rate limit. Its script calls the API (with the
session cookie and the CSRF token) only for actions: creating and revoking keys, checkout
and the billing portal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from app.accounts.keys import describe_key
from app.accounts.sessions import SessionAccount
from app.api.account import DEFAULT_USAGE_DAYS, usage_report
from app.api.deps import ServicesDep
from app.api.images import image_url
from app.web.deps import SiteDep
from app.web.pricing import format_price
from app.web.sessions import require_session

router = APIRouter(include_in_schema=False)

IMAGES_PER_PAGE = 12
SessionDep = Annotated[SessionAccount, Depends(require_session)]


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(
    request: Request,
    site: SiteDep,
    services: ServicesDep,
    session: SessionDep,
    images_before: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    locale = site.renderer.locale_of(request)
    currency = site.settings.currency
    account = await services.accounts.get(session.account_id)
    balance = await services.credits.balance(account.id)
    plan = await services.plans.get(account.plan)
    end = datetime.now(UTC).date()
    usage = await usage_report(
        services, account.id, end - timedelta(days=DEFAULT_USAGE_DAYS - 1), end
    )
    page = await services.generation.list_images(
        account.id, limit=IMAGES_PER_PAGE, cursor=images_before
    )
    plans = [item for item in await services.plans.list(public_only=True) if item.price > 0]
    packs = await services.plans.packs()
    return site.renderer.render(
        request,
        "dashboard.html",
        {
            "account": account,
            "balance": balance,
            "plan": plan,
            "usage_json": usage.model_dump(mode="json", by_alias=True),
            "usage": usage,
            "keys": [describe_key(row) for row in await services.keys.list(account.id)],
            "images": [(image, image_url(services, image.id)) for image in page.images],
            "next_images": page.next_cursor,
            "first_page": images_before is None,
            "retention_days": site.settings.image_retention_days,
            "plans": [(item, format_price(item.price, locale, currency)) for item in plans],
            "packs": [(item, format_price(item.price, locale, currency)) for item in packs],
        },
    )
