"""Account pages: sign-up with email verification, log-in, log-out, password reset, deletion."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.accounts.email_tokens import TokenPurpose
from app.accounts.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from app.accounts.service import LoginFailure
from app.api.clients import client_address
from app.api.deps import ServicesDep
from app.container import Services
from app.errors import (
    ConflictError,
    InvalidRequestError,
    MailError,
    NotFoundError,
    RateLimitedError,
)
from app.storage.tables import Account
from app.web.deps import CsrfDep, SiteDep
from app.web.emails import link, password_reset_mail, verification_mail
from app.web.i18n import N_
from app.web.sessions import (
    SESSION_COOKIE,
    SessionRequired,
    clear_session_cookie,
    current_session,
    require_session,
    safe_next,
    set_session_cookie,
)
from app.web.site import WebSite

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Form messages by domain error code; FIELD_OF_CODE names the field each one belongs to.
FIELD_MESSAGES = {
    "invalid_email": N_("Enter an email address such as name@example.com."),
    "email_taken": N_(
        "An account with this email address exists already. Log in, or reset its password."
    ),
    "password_too_short": N_("Use at least %(min)s characters."),
    "password_too_long": N_("Use at most %(max)s characters."),
    "password_too_common": N_(
        "This password is too easy to guess. Choose a longer, less predictable one, such as "
        "several unrelated words."
    ),
    "terms_not_accepted": N_("Accept the terms of service to create an account."),
    "wrong_password": N_("The password is not correct."),
}
FIELD_OF_CODE = {"email_taken": "email", "invalid_email": "email", "terms_not_accepted": "terms"}


def _field_error(site: WebSite, request: Request, code: str) -> str:
    message = site.translator(request).gettext(FIELD_MESSAGES[code])
    return message % {"min": MIN_PASSWORD_CHARS, "max": MAX_PASSWORD_CHARS}


def _address(request: Request, site: WebSite) -> str:
    return client_address(request, site.settings.trusted_proxies)


def _rate_limited(site: WebSite, request: Request, error: RateLimitedError) -> str:
    minutes = max(1, math.ceil(error.retry_after_s / 60))
    return site.translator(request).ngettext(
        "Too many attempts. Try again in %(minutes)s minute.",
        "Too many attempts. Try again in %(minutes)s minutes.",
        minutes,
    ) % {"minutes": minutes}


def _notice(
    request: Request,
    site: WebSite,
    title: str,
    paragraphs: list[str],
    *,
    actions: list[tuple[str, str]] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return site.renderer.render(
        request,
        "notice.html",
        {"title": title, "paragraphs": paragraphs, "actions": actions or []},
        status_code=status_code,
    )


async def _send_verification(
    request: Request, site: WebSite, services: Services, account: Account
) -> bool:
    """Send the verification link; return False (and log) when the mail could not be sent."""
    token = services.email_tokens.issue(TokenPurpose.VERIFY_EMAIL, account.id, account.email)
    url = link(
        site.renderer.public_base_url, "/verify-email", token, site.renderer.locale_of(request)
    )
    message = verification_mail(
        site.translator(request),
        sender=site.settings.resolved_mail_from,
        recipient=account.email,
        url=url,
    )
    return await _send(services, message, account.id)


async def _send(services: Services, message: Any, account_id: str) -> bool:
    try:
        await services.mailer.send(message)
    except MailError as error:
        logger.error("the mail to account %s was not sent: %s", account_id, error.detail)
        return False
    return True


# Sign-up


def _signup_page(
    request: Request,
    site: WebSite,
    *,
    email: str = "",
    field_errors: dict[str, str] | None = None,
    form_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return site.renderer.render(
        request,
        "signup.html",
        {
            "email": email,
            "field_errors": field_errors or {},
            "form_error": form_error,
            "min_password_chars": MIN_PASSWORD_CHARS,
            "max_password_chars": MAX_PASSWORD_CHARS,
        },
        status_code=status_code,
    )


@router.get("/signup", response_class=HTMLResponse)
async def signup_form(request: Request, site: SiteDep) -> Response:
    if current_session(request) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    return _signup_page(request, site)


@router.post("/signup", response_class=HTMLResponse, dependencies=[CsrfDep])
async def signup(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    form = await request.form()
    email = str(form.get("email") or "").strip()
    password = str(form.get("password") or "")
    if not form.get("terms"):
        errors = {"terms": _field_error(site, request, "terms_not_accepted")}
        return _signup_page(request, site, email=email, field_errors=errors, status_code=422)
    try:
        await services.limiter.check_mail(_address(request, site), email)
        account = await services.accounts.create(email, password=password, verified=False)
    except RateLimitedError as error:
        message = _rate_limited(site, request, error)
        return _signup_page(request, site, email=email, form_error=message, status_code=429)
    except (InvalidRequestError, ConflictError) as error:
        code = error.instance_code
        field = FIELD_OF_CODE.get(code, "password")
        errors = {field: _field_error(site, request, code)}
        status = 409 if isinstance(error, ConflictError) else 422
        return _signup_page(request, site, email=email, field_errors=errors, status_code=status)
    logger.info("account %s signed up; verification pending", account.id)
    sent = await _send_verification(request, site, services, account)
    return _check_inbox(request, site, account.email, sent=sent)


def _check_inbox(request: Request, site: WebSite, email: str, *, sent: bool) -> HTMLResponse:
    _ = site.translator(request).gettext
    if not sent:
        return _notice(
            request,
            site,
            _("The mail could not be sent"),
            [
                _(
                    "Your account was created, but the confirmation mail to %(email)s could not be sent."
                )
                % {"email": email},
                _("Ask for a new link in a few minutes, or contact us."),
            ],
            actions=[
                ("/verify-email/resend", _("Send the link again")),
                ("/contact", _("Contact")),
            ],
            status_code=503,
        )
    return _notice(
        request,
        site,
        _("Check your inbox"),
        [
            _("We sent a link to %(email)s. Open it to confirm your address, then log in.")
            % {"email": email},
            _("No mail after a few minutes? Check the spam folder, or ask for a new link."),
        ],
        actions=[("/verify-email/resend", _("Send the link again"))],
    )


@router.get("/verify-email", response_class=HTMLResponse)
async def verify_email(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    _ = site.translator(request).gettext
    token = request.query_params.get("token", "")
    try:
        account = await services.accounts.get(services.email_tokens.account_id_of(token))
        services.email_tokens.verify(TokenPurpose.VERIFY_EMAIL, token, account.email)
        await services.accounts.mark_verified(account.id, account.email)
    except (NotFoundError, InvalidRequestError) as error:
        expired = error.instance_code == "expired_email_link"
        return _notice(
            request,
            site,
            _("The link has expired") if expired else _("The link is not valid"),
            [_("Ask for a new confirmation link; it works for two days.")],
            actions=[("/verify-email/resend", _("Send the link again"))],
            status_code=400,
        )
    logger.info("account %s verified its email address", account.id)
    return RedirectResponse("/login?verified=1", status_code=303)


@router.get("/verify-email/resend", response_class=HTMLResponse)
async def resend_form(request: Request, site: SiteDep) -> HTMLResponse:
    return site.renderer.render(request, "email_form.html", {"purpose": "verify", "email": ""})


@router.post("/verify-email/resend", response_class=HTMLResponse, dependencies=[CsrfDep])
async def resend(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    email = str((await request.form()).get("email") or "").strip()
    try:
        await services.limiter.check_mail(_address(request, site), email)
    except RateLimitedError as error:
        return _email_form_error(request, site, "verify", email, error)
    try:
        account = await services.accounts.get_by_email(email)
    except NotFoundError:
        account = None
    # The page reads the same whether or not a mail went out, so it reveals no account.
    if account is not None and account.email_verified_at is None:
        await _send_verification(request, site, services, account)
    return _check_inbox(request, site, email, sent=True)


def _email_form_error(
    request: Request, site: WebSite, purpose: str, email: str, error: RateLimitedError
) -> HTMLResponse:
    return site.renderer.render(
        request,
        "email_form.html",
        {"purpose": purpose, "email": email, "form_error": _rate_limited(site, request, error)},
        status_code=429,
    )


# Log-in and log-out


def _login_page(
    request: Request,
    site: WebSite,
    *,
    email: str = "",
    form_error: str | None = None,
    unverified: bool = False,
    status_code: int = 200,
) -> HTMLResponse:
    _ = site.translator(request).gettext
    notice = None
    if request.query_params.get("verified"):
        notice = _("Your email address is confirmed. Log in to start.")
    elif request.query_params.get("reset"):
        notice = _("Your password was changed. Log in with the new one.")
    return site.renderer.render(
        request,
        "login.html",
        {
            "email": email,
            "form_error": form_error,
            "unverified": unverified,
            "notice": notice,
            "next": safe_next(request.query_params.get("next")),
        },
        status_code=status_code,
    )


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, site: SiteDep) -> Response:
    if current_session(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request, site)


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfDep])
async def login(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    _ = site.translator(request).gettext
    form = await request.form()
    email = str(form.get("email") or "").strip()
    password = str(form.get("password") or "")
    try:
        await services.limiter.check_login(_address(request, site), email)
    except RateLimitedError as error:
        message = _rate_limited(site, request, error)
        response = _login_page(request, site, email=email, form_error=message, status_code=429)
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
        return response
    result = await services.accounts.check_login(email, password)
    if isinstance(result, LoginFailure):
        if result.reason == "unverified":
            message = _("Confirm your email address first: open the link we sent you.")
            return _login_page(
                request, site, email=email, form_error=message, unverified=True, status_code=403
            )
        message = _("The email address or the password is not correct.")
        return _login_page(request, site, email=email, form_error=message, status_code=401)

    started = await services.browser_sessions.start(
        result.id, replacing=request.cookies.get(SESSION_COOKIE)
    )
    logger.info("account %s logged in", result.id)
    redirect = RedirectResponse(safe_next(str(form.get("next") or "")), status_code=303)
    set_session_cookie(
        request,
        redirect,
        started.token,
        max_age_s=site.settings.session_max_age_s,
        trusted_proxies=site.settings.trusted_proxies,
    )
    return redirect


@router.post("/logout", dependencies=[CsrfDep])
async def logout(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    token = getattr(request.state, "session_token", None)
    if isinstance(token, str):
        await services.browser_sessions.end(token)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(request, response, trusted_proxies=site.settings.trusted_proxies)
    return response


# Password reset


@router.get("/password-reset", response_class=HTMLResponse)
async def reset_form(request: Request, site: SiteDep) -> HTMLResponse:
    return site.renderer.render(request, "email_form.html", {"purpose": "reset", "email": ""})


@router.post("/password-reset", response_class=HTMLResponse, dependencies=[CsrfDep])
async def request_reset(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    _ = site.translator(request).gettext
    email = str((await request.form()).get("email") or "").strip()
    try:
        await services.limiter.check_mail(_address(request, site), email)
    except RateLimitedError as error:
        return _email_form_error(request, site, "reset", email, error)
    try:
        account = await services.accounts.get_by_email(email)
    except NotFoundError:
        account = None
    if account is not None and account.role != "system":
        token = services.email_tokens.issue(
            TokenPurpose.RESET_PASSWORD, account.id, account.password_hash or ""
        )
        url = link(
            site.renderer.public_base_url,
            "/password-reset/confirm",
            token,
            site.renderer.locale_of(request),
        )
        message = password_reset_mail(
            site.translator(request),
            sender=site.settings.resolved_mail_from,
            recipient=account.email,
            url=url,
        )
        await _send(services, message, account.id)
    return _notice(
        request,
        site,
        _("Check your inbox"),
        [
            _("If an account uses %(email)s, we sent it a link to choose a new password.")
            % {"email": email},
            _("The link works for one hour."),
        ],
    )


async def _reset_account(services: Services, token: str) -> Account:
    """Return the account that a valid, unused reset token names; InvalidRequestError if none."""
    try:
        account = await services.accounts.get(services.email_tokens.account_id_of(token))
    except NotFoundError:
        raise InvalidRequestError(
            "The link is invalid or was already used. Ask for a new one.",
            code="invalid_email_link",
        ) from None
    services.email_tokens.verify(TokenPurpose.RESET_PASSWORD, token, account.password_hash or "")
    return account


def _reset_page(
    request: Request,
    site: WebSite,
    token: str,
    *,
    field_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return site.renderer.render(
        request,
        "password_reset.html",
        {
            "token": token,
            "field_error": field_error,
            "min_password_chars": MIN_PASSWORD_CHARS,
            "max_password_chars": MAX_PASSWORD_CHARS,
        },
        status_code=status_code,
    )


def _bad_link(request: Request, site: WebSite, error: InvalidRequestError) -> HTMLResponse:
    _ = site.translator(request).gettext
    expired = error.instance_code == "expired_email_link"
    return _notice(
        request,
        site,
        _("The link has expired") if expired else _("The link is not valid"),
        [_("Reset links work for one hour and only once. Ask for a new one.")],
        actions=[("/password-reset", _("Reset the password"))],
        status_code=400,
    )


@router.get("/password-reset/confirm", response_class=HTMLResponse)
async def reset_confirm_form(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    token = request.query_params.get("token", "")
    try:
        await _reset_account(services, token)
    except InvalidRequestError as error:
        return _bad_link(request, site, error)
    return _reset_page(request, site, token)


@router.post("/password-reset/confirm", response_class=HTMLResponse, dependencies=[CsrfDep])
async def reset_password(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    form = await request.form()
    token = str(form.get("token") or "")
    try:
        account = await _reset_account(services, token)
    except InvalidRequestError as error:
        return _bad_link(request, site, error)
    try:
        await services.accounts.set_password(account.id, str(form.get("password") or ""))
    except InvalidRequestError as error:
        message = _field_error(site, request, error.instance_code)
        return _reset_page(request, site, token, field_error=message, status_code=422)
    # The link proved the email address, and every other browser must log in again.
    await services.accounts.mark_verified(account.id, account.email)
    ended = await services.browser_sessions.end_all(account.id)
    logger.info("account %s reset its password; %s sessions ended", account.id, ended)
    response = RedirectResponse("/login?reset=1", status_code=303)
    clear_session_cookie(request, response, trusted_proxies=site.settings.trusted_proxies)
    return response


# The account page and deletion


@router.get("/account", response_class=HTMLResponse, dependencies=[Depends(require_session)])
async def account_page(request: Request, site: SiteDep) -> HTMLResponse:
    return site.renderer.render(request, "account.html", {"field_error": None})


@router.post("/account/delete", response_class=HTMLResponse, dependencies=[CsrfDep])
async def delete_account(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    session = current_session(request)
    if session is None:
        raise SessionRequired(request)
    password = str((await request.form()).get("password") or "")
    try:
        await services.limiter.check_login(_address(request, site), session.email)
    except RateLimitedError as error:
        message = _rate_limited(site, request, error)
        return site.renderer.render(
            request, "account.html", {"field_error": message}, status_code=429
        )
    checked = await services.accounts.check_login(session.email, password)
    if isinstance(checked, LoginFailure):
        message = _field_error(site, request, "wrong_password")
        return site.renderer.render(
            request, "account.html", {"field_error": message}, status_code=403
        )
    if await services.billing.live_subscription(session.account_id) is not None:
        # Deleting the account would leave Stripe charging a customer we no longer know.
        _ = site.translator(request).gettext
        message = _(
            "Cancel your subscription first, under Manage the subscription on the dashboard; "
            "then delete the account."
        )
        return site.renderer.render(
            request, "account.html", {"field_error": message}, status_code=409
        )
    images = await services.generation.delete_account_images(session.account_id)
    await services.accounts.delete(session.account_id)
    logger.info("account %s deleted with %s images", session.account_id, images)
    request.state.session_account = None
    request.state.session_id = ""
    _ = site.translator(request).gettext
    response = _notice(
        request,
        site,
        _("Your account was deleted"),
        [
            _(
                "Your account, its API keys and its images are deleted. Thank you for using the service."
            )
        ],
        actions=[("/", _("Back to the home page"))],
    )
    clear_session_cookie(request, response, trusted_proxies=site.settings.trusted_proxies)
    return response
