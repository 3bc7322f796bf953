"""The admin dashboard: accounts with search, revenue, usage, errors and latency, health, mail.

Error rate and latency come from the generation records in the database, not from the
process's metrics. The records cover every replica and survive restarts. Each process's
counters start at zero and describe only that process, so Prometheus is the place for those.
Revenue and the health summary are read by the page's script from their JSON routes, so the
page shows a note instead of breaking while billing or health checks are not set up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from app.accounts.sessions import SessionAccount
from app.accounts.usage import days_between
from app.api.account import DEFAULT_USAGE_DAYS
from app.api.deps import ServicesDep
from app.web.deps import SiteDep
from app.web.sessions import require_admin_session

router = APIRouter(include_in_schema=False)

ACCOUNTS_PER_PAGE = 25
MESSAGES_PER_PAGE = 20
AdminSessionDep = Annotated[SessionAccount, Depends(require_admin_session)]


@router.get("/admin", response_class=HTMLResponse)
async def admin_dashboard(
    request: Request,
    site: SiteDep,
    services: ServicesDep,
    session: AdminSessionDep,
    search: Annotated[str | None, Query(alias="q", max_length=100)] = None,
    accounts_after: Annotated[str | None, Query(max_length=64)] = None,
    messages_before: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    accounts = list(
        await services.accounts.list(
            limit=ACCOUNTS_PER_PAGE + 1, cursor=accounts_after, search=search
        )
    )
    more_accounts = len(accounts) > ACCOUNTS_PER_PAGE
    accounts = accounts[:ACCOUNTS_PER_PAGE]
    end = datetime.now(UTC).date()
    start = end - timedelta(days=DEFAULT_USAGE_DAYS - 1)
    usage = await services.usage.by_plan_and_backend(start, end)
    outcomes = await services.usage.outcomes_by_day(start, end)
    messages = await services.contact.list_messages(
        limit=MESSAGES_PER_PAGE, before_id=messages_before
    )
    charts = {
        "days": [day.isoformat() for day in days_between(start, end)],
        "usage": [
            {
                "date": row.day.isoformat(),
                "group": f"{row.group[0] or '-'} / {row.group[1] or '-'}",
                "images": row.images,
            }
            for row in usage
        ],
        "outcomes": [
            {
                "date": row.day.isoformat(),
                "error_rate": row.failed / row.total if row.total else 0,
                "mean_duration_ms": row.mean_duration_ms,
            }
            for row in outcomes
        ],
    }
    return site.renderer.render(
        request,
        "admin.html",
        {
            "search": search or "",
            "accounts": accounts,
            "next_accounts": accounts[-1].id if more_accounts else None,
            "usage": usage,
            "outcomes": outcomes,
            "charts": charts,
            "messages": messages,
            "next_messages": messages[-1].id if len(messages) == MESSAGES_PER_PAGE else None,
        },
    )
