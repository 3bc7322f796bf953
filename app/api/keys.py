"""API keys of the caller's account: list, create (the key is shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter

from app.accounts.keys import DEFAULT_SCOPES, KeyMode, describe_key, parse_scopes
from app.api.deps import KeyManagerDep, ServicesDep
from app.api.schemas.accounts import KeyCreate, KeyCreatedPublic, KeyListPublic, KeyPublic
from app.errors import PermissionDeniedError
from app.storage.tables import ApiKey

router = APIRouter(tags=["keys"])


def key_public(row: ApiKey) -> KeyPublic:
    return KeyPublic.model_validate(describe_key(row))


@router.get("/keys", response_model=KeyListPublic)
async def list_keys(principal: KeyManagerDep, services: ServicesDep) -> KeyListPublic:
    rows = await services.keys.list(principal.account_id)
    return KeyListPublic(data=[key_public(row) for row in rows])


@router.post("/keys", response_model=KeyCreatedPublic, status_code=201)
async def create_key(
    body: KeyCreate, principal: KeyManagerDep, services: ServicesDep
) -> KeyCreatedPublic:
    requested = body.scopes if body.scopes is not None else [s.value for s in DEFAULT_SCOPES]
    parse_scopes(requested, account_role=principal.role)  # unknown names first: a 422
    not_held = sorted(set(requested) - principal.scopes)
    if not_held:
        # A key may hand on only what it holds, so that no key can mint a stronger one.
        raise PermissionDeniedError(
            f"This key cannot grant scopes it does not hold: {', '.join(not_held)}. Ask for "
            "fewer scopes, or create the key with a key that holds them.",
            code="scope_not_held",
            scopes=not_held,
        )
    created = await services.keys.create(
        principal.account_id, name=body.name, mode=KeyMode(body.mode), scopes=body.scopes
    )
    return KeyCreatedPublic(**describe_key(created.row), key=created.token)


@router.delete("/keys/{key_id}", response_model=KeyPublic)
async def revoke_key(key_id: str, principal: KeyManagerDep, services: ServicesDep) -> KeyPublic:
    row = await services.keys.revoke(key_id, account_id=principal.account_id)
    return key_public(row)
