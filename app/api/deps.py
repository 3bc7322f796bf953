"""FastAPI dependencies: the services, the authenticated caller and scope checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.accounts.keys import DEFAULT_SCOPES, KeyMode, Principal, Scope
from app.accounts.sessions import SessionAccount
from app.container import Services
from app.errors import AuthenticationError, PermissionDeniedError
from app.web.deps import get_site, require_csrf

# Methods that change nothing, so a cookie-authenticated call needs no CSRF token for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str | None:
    """Return the token of an `Authorization: Bearer` header, or None when there is none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "The Authorization header must read `Bearer <API key>`.", code="malformed_authorization"
        )
    return token.strip()


def session_principal(session: SessionAccount) -> Principal:
    """The caller behind a browser session: a live key's default scopes, `admin` for admins."""
    scopes = {scope.value for scope in DEFAULT_SCOPES}
    if session.role == "admin":
        scopes.add(Scope.ADMIN.value)
    return Principal(
        key_id=None,
        account_id=session.account_id,
        mode=KeyMode.LIVE,
        scopes=frozenset(scopes),
        role=session.role,
        plan=session.plan,
    )


async def authenticate(request: Request, services: ServicesDep) -> Principal:
    """Authenticate an API key, or else the browser's session cookie.

    A call that a cookie authenticates must carry the page's CSRF token in X-CSRF-Token
    unless its method is safe, because a browser sends cookies with requests of other sites.
    """
    token = bearer_token(request)
    session = getattr(request.state, "session_account", None)
    if token is not None:
        principal = await services.keys.authenticate(token)
    elif isinstance(session, SessionAccount):
        if request.method not in SAFE_METHODS:
            await require_csrf(request, get_site(request))
        principal = session_principal(session)
    else:
        raise AuthenticationError(
            "No API key was sent. Send `Authorization: Bearer <API key>`; create a key with "
            "`visioncraft keys create --name NAME` or on the dashboard.",
            code="missing_api_key",
        )
    request.state.principal = principal
    decision = await services.limiter.check(principal)
    # Kept for the response headers, on a 429 as on any other answer.
    request.state.rate_limit = decision
    if decision is not None and not decision.allowed:
        raise services.limiter.rejection(decision)
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """Build a dependency that authenticates the caller and checks that its key carries `scope`."""

    async def check(principal: PrincipalDep) -> Principal:
        principal.require(scope)
        return principal

    return check


async def require_admin(principal: PrincipalDep) -> Principal:
    """Authenticate an admin: the key needs the `admin` scope and its account the admin role."""
    principal.require(Scope.ADMIN)
    if principal.role != "admin":
        raise PermissionDeniedError(
            "Only an admin account may use the admin routes.", code="admin_only"
        )
    return principal


GeneratorDep = Annotated[Principal, Depends(require_scope(Scope.IMAGES_GENERATE))]
ReaderDep = Annotated[Principal, Depends(require_scope(Scope.IMAGES_READ))]
KeyManagerDep = Annotated[Principal, Depends(require_scope(Scope.KEYS_MANAGE))]
AdminDep = Annotated[Principal, Depends(require_admin)]
