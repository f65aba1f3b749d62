"""`Idempotency-Key` on paid writes, with Stripe's semantics.

The first request with a key runs; its answer is kept for 24 hours and every retry with the same key and the
same request gets it again (same status, same body) without running anything twice. The same key with a
different request is refused (422, naming the key); a retry while the first is still running gets 409.
Keys are scoped to the caller (its token, or its address where there is no token yet).

The ledger row keeps only digests of the key, and the answer encrypted (AES-256-GCM) with a key derived from
the Idempotency-Key itself: an answer that carries an access token can be replayed to whoever sends the key
again, but the database alone never reveals it. Answers that say "try again" (409, 429, 5xx other than a
provider's refusal) are not kept: the retry runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from ecomdream.db.session import SessionMaker, transaction
from ecomdream.errors import EcomdreamError, InvalidRequest, NotNow
from ecomdream.models import IdempotentRequest

HEADER = "Idempotency-Key"
KEPT = timedelta(hours=24)
# A "running" claim older than this was left by a request that died; a retry may take it over.
ABANDONED = timedelta(minutes=15)
MAX_KEY_LENGTH = 255
NOT_KEPT = frozenset({409, 429, 500, 503, 504})


class KeyReused(EcomdreamError):
    """The Idempotency-Key was already used with a different request."""

    status_code = 422


@dataclass(frozen=True)
class Claim:
    """A keyed request that runs now; `finish` keeps its answer for the retries."""

    scope: str
    key_digest: str
    secret: bytes
    request_hash: str


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, checked for shape."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable characters (a random UUID is best)"
        )
    return key


def request_hash(*parts: object) -> str:
    """A digest of what a request asks for (compared between a key's first use and its retries)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _secret(scope: str, key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=scope.encode(), info=b"idempotent-answer").derive(
        key.encode()
    )


def _seal(secret: bytes, status: int, body: Any) -> dict[str, object]:
    nonce = os.urandom(12)
    sealed = AESGCM(secret).encrypt(nonce, json.dumps({"status": status, "body": body}).encode(), None)
    return {"sealed": (nonce + sealed).hex()}


def _open(secret: bytes, stored: dict[str, Any]) -> tuple[int, Any]:
    raw = bytes.fromhex(str(stored["sealed"]))
    answer = json.loads(AESGCM(secret).decrypt(raw[:12], raw[12:], None))
    return int(answer["status"]), answer["body"]


class Idempotency:
    """Claims keys and keeps answers in the `idempotent_requests` ledger."""

    def __init__(self, sessionmaker: SessionMaker) -> None:
        self.sessionmaker = sessionmaker

    async def claim(self, scope: str, key: str, request: str) -> Claim | JSONResponse:
        """Run the request (a `Claim`), or the first answer to replay."""
        claim = Claim(
            scope=scope,
            key_digest=hashlib.sha256(key.encode()).hexdigest(),
            secret=_secret(scope, key),
            request_hash=request,
        )
        now = datetime.now(UTC)
        async with transaction(self.sessionmaker) as session:
            inserted = await session.execute(
                insert(IdempotentRequest)
                .values(
                    scope=scope,
                    key=claim.key_digest,
                    request_hash=request,
                    state="running",
                    expires_at=now + KEPT,
                )
                .on_conflict_do_nothing()
                .returning(IdempotentRequest.key)
            )
            if inserted.first() is not None:
                return claim
            row = await session.scalar(
                select(IdempotentRequest)
                .where(IdempotentRequest.scope == scope, IdempotentRequest.key == claim.key_digest)
                .with_for_update()
            )
            assert row is not None
            abandoned = row.state == "running" and row.created_at < now - ABANDONED
            if row.expires_at <= now or abandoned:
                row.request_hash, row.state, row.body, row.status_code = request, "running", None, None
                row.created_at, row.expires_at = now, now + KEPT
                return claim
            if row.request_hash != request:
                raise KeyReused(
                    f"{HEADER} {key!r} was already used with a different request; send a new key for a new request"
                )
            if row.state == "running" or row.body is None:
                raise NotNow(f"A request with {HEADER} {key!r} is still running; retry in a moment")
            status, body = _open(claim.secret, row.body)
        return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"})

    async def finish(self, claim: Claim, status: int, body: Any) -> None:
        """Keep the answer for the retries (or let the next retry run, for a try-again answer)."""
        async with transaction(self.sessionmaker) as session:
            match = (IdempotentRequest.scope == claim.scope) & (IdempotentRequest.key == claim.key_digest)
            if status in NOT_KEPT:
                await session.execute(delete(IdempotentRequest).where(match))
                return
            await session.execute(
                update(IdempotentRequest)
                .where(match)
                .values(state="done", status_code=status, body=_seal(claim.secret, status, body))
            )

    async def abandon(self, claim: Claim) -> None:
        """The request failed unexpectedly: nothing is kept, the next retry runs."""
        async with transaction(self.sessionmaker) as session:
            await session.execute(
                delete(IdempotentRequest).where(
                    IdempotentRequest.scope == claim.scope, IdempotentRequest.key == claim.key_digest
                )
            )


Answer = tuple[int, dict[str, Any]]


async def once(
    ledger: Idempotency, claim: Claim | None, operation: Callable[[], Awaitable[Answer]]
) -> JSONResponse:
    """Run a (possibly keyed) operation and keep its answer for the key's retries."""
    try:
        status, body = await operation()
    except EcomdreamError as exc:
        if claim is not None:
            await ledger.finish(
                claim, exc.status_code, {"code": exc.status_code, "message": exc.message, **exc.extra}
            )
        raise
    except BaseException:
        if claim is not None:
            await ledger.abandon(claim)
        raise
    if claim is not None:
        await ledger.finish(claim, status, body)
    return JSONResponse(body, status_code=status)
