"""Who is asking: the bearer token (the owner's, or a read-only share token) and the client's address.

A token that does not open the resource gets the same 404 as an unknown id, and counts as a failed attempt
of its address (too many → 429).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import StateDep
from api.guards import Access, Limits, digest, matches
from ecomdream.errors import NoLongerAvailable, NotAllowed, NotAuthenticated, NotFound
from ecomdream.models import Payment, Version
from ecomdream.repositories.access import AccessRepository
from ecomdream.repositories.payments import PaymentRepository


@dataclass(frozen=True)
class Caller:
    """A request that carries a bearer token."""

    token: str
    address: str
    limits: Limits

    @property
    def token_digest(self) -> str:
        """What is stored of the caller's token."""
        return digest(self.token)

    async def not_found(self, message: str) -> NotFound:
        """The 404 for a resource the token does not open (the same as for an unknown id)."""
        await self.limits.wrong_token(self.address)
        return NotFound(message)

    def owner_only(self, access: Access) -> None:
        """Writes need the owner's token; a share link only reads."""
        if access is not Access.OWNER:
            raise NotAllowed("A share link can only read this model; use the owner's access token")


# Declares the scheme in the OpenAPI document; the header is checked below, so that every refusal has our
# error shape and a `WWW-Authenticate` header.
BEARER = HTTPBearer(
    auto_error=False, description="The access token of POST /api/v1/payments/create, or a share token"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def get_caller(request: Request, state: StateDep, credentials: Credentials) -> Caller:
    """The caller's token and address; 401 without a token, 429 for an address that keeps guessing."""
    token = credentials.credentials.strip() if credentials else ""
    if not token or len(token) > 200:
        raise NotAuthenticated("Send your access token as `Authorization: Bearer <access_token>`")
    address = state.limits.address(request)
    await state.limits.refuse_if_guessing(address)
    return Caller(token=token, address=address, limits=state.limits)


async def get_optional_caller(request: Request, state: StateDep, credentials: Credentials) -> Caller | None:
    """Like `get_caller`, for routes where a token is needed only sometimes (add-on checkouts)."""
    if credentials is None and not request.headers.get("authorization"):
        return None
    return await get_caller(request, state, credentials)


CallerDep = Annotated[Caller, Depends(get_caller)]
OptionalCallerDep = Annotated[Caller | None, Depends(get_optional_caller)]


async def payment_of(session: AsyncSession, caller: Caller, payment_id: uuid.UUID) -> Payment:
    """A payment the caller's token opens (its own, or an add-on of its model), else 404."""
    payment = await PaymentRepository(session).get(payment_id)
    if payment is None or not matches(payment.access_token_hash, caller.token):
        raise await caller.not_found("Invalid payment id")
    return payment


async def version_of(
    session: AsyncSession, caller: Caller, version_id: uuid.UUID, unknown: str = "Invalid version id"
) -> tuple[Version, Access]:
    """A model the caller's token opens, and how (owner or share link), else 404 saying `unknown`."""
    access = AccessRepository(session)
    found = await access.version(version_id)
    if found is not None and matches(found.owner_digest, caller.token):
        return found.version, Access.OWNER
    # A second query only for callers who are not the owner (share links, strangers).
    if found is not None and await access.shared(version_id, caller.token_digest):
        return found.version, Access.SHARE
    raise await caller.not_found(unknown)


def not_deleted(version: Version) -> Version:
    """The model, unless its owner deleted it (410: it existed, and its content is gone)."""
    if version.deleted_at is not None:
        raise NoLongerAvailable(
            f"This model was deleted at its owner's request on {version.deleted_at:%Y-%m-%d}; its photos, "
            "prompts and images are gone (the deletion's receipt says what was deleted)"
        )
    return version
