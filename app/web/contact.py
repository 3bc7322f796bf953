"""The contact form: show it, store a message, and thank the sender."""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.clients import client_address
from app.api.deps import ServicesDep
from app.contact.service import (
    MAX_EMAIL_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    ContactDraft,
    ContactMessageInvalid,
)
from app.errors import RateLimitedError
from app.web.deps import CsrfDep, SiteDep
from app.web.i18n import N_

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# A field that people never see or fill in; software that fills every field gives itself away.
HONEYPOT_FIELD = "website"
FIELD_ERRORS = {
    "missing": N_("Fill in this field."),
    "too_long": N_("Shorten this to %(limit)s characters or fewer."),
    "invalid": N_("Enter an email address such as name@example.com."),
}
LIMITS = {"name": MAX_NAME_CHARS, "email": MAX_EMAIL_CHARS, "message": MAX_MESSAGE_CHARS}


def _form_page(
    request: Request,
    site: SiteDep,
    *,
    values: dict[str, str] | None = None,
    field_errors: dict[str, str] | None = None,
    form_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return site.renderer.render(
        request,
        "contact.html",
        {
            "values": values or {"name": "", "email": "", "message": ""},
            "field_errors": field_errors or {},
            "form_error": form_error,
            "limits": LIMITS,
            "honeypot_field": HONEYPOT_FIELD,
        },
        status_code=status_code,
    )


@router.get("/contact", response_class=HTMLResponse)
async def contact_form(request: Request, site: SiteDep) -> HTMLResponse:
    return _form_page(request, site)


@router.get("/contact/sent", response_class=HTMLResponse)
async def contact_sent(request: Request, site: SiteDep) -> HTMLResponse:
    return site.renderer.render(request, "contact_sent.html")


@router.post("/contact", response_class=HTMLResponse, dependencies=[CsrfDep])
async def send_contact(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    form = await request.form()
    values = {name: str(form.get(name) or "") for name in ("name", "email", "message")}
    if form.get(HONEYPOT_FIELD):
        # Redirect as if the message were stored, so that a bot learns nothing from the response.
        logger.info("contact form dropped: the hidden %s field was filled in", HONEYPOT_FIELD)
        return RedirectResponse("/contact/sent", status_code=303)

    translations = site.translator(request)
    _ = translations.gettext
    try:
        await services.contact.submit(
            ContactDraft(**values),
            locale=site.renderer.locale_of(request),
            client_address=client_address(request, site.settings.trusted_proxies),
        )
    except ContactMessageInvalid as error:
        field_errors = {
            problem.field: _(FIELD_ERRORS[problem.code]) % {"limit": problem.limit}
            for problem in error.problems
        }
        return _form_page(
            request,
            site,
            values=values,
            field_errors=field_errors,
            form_error=_("The message was not sent. Correct the marked fields."),
            status_code=422,
        )
    except RateLimitedError as error:
        minutes = max(1, math.ceil(error.retry_after_s / 60))
        response = _form_page(
            request,
            site,
            values=values,
            form_error=translations.ngettext(
                "Too many messages were sent from your address in the last hour. "
                "Try again in %(minutes)s minute.",
                "Too many messages were sent from your address in the last hour. "
                "Try again in %(minutes)s minutes.",
                minutes,
            )
            % {"minutes": minutes},
            status_code=429,
        )
        response.headers["Retry-After"] = str(math.ceil(error.retry_after_s))
        return response
    return RedirectResponse("/contact/sent", status_code=303)
