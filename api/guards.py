"""Tokens and abuse limits, per client address: the parts of access control that need no request context.

Tokens are 256-bit random strings from `secrets`, shown once and stored only as SHA-256 digests (a digest of
a random 256-bit token cannot be reversed or guessed, so no slow hash is needed).

Limits use the `limits` library with in-memory storage: each API process counts on its own (see README).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.requests import Request

from ecomdream.config import Settings
from ecomdream.errors import TooManyRequests

TOKEN_BYTES = 32
# An upload slot is given back when the upload ends; one left by a crashed request expires after this.
UPLOAD_SLOT_SECONDS = 15 * 60
UPLOAD_RETRY_AFTER_S = 10
# Addresses stopped for guessing tokens, kept before expired ones are swept out.
GUESSERS_KEPT = 10_000


def new_token() -> str:
    """A fresh access or share token (43 URL-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def matches(stored: str | None, token: str) -> bool:
    """Whether token is the one whose digest is stored (compared in constant time)."""
    return stored is not None and hmac.compare_digest(stored, digest(token))


class Access(StrEnum):
    """What a token may do with a model."""

    OWNER = "owner"
    SHARE = "share"


class Limits:
    """The abuse limits, per client address."""

    def __init__(self, settings: Settings) -> None:
        self.storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.checkout: RateLimitItem = parse(settings.checkout_rate_limit)
        self.failed_tokens: RateLimitItem = parse(settings.failed_token_rate_limit)
        self.uploads_in_flight = settings.uploads_in_flight
        # Addresses whose window of wrong tokens is full, until when (counted by the limiter).
        self.guessing: dict[str, float] = {}
        self.proxies: list[IPv4Network | IPv6Network] = [
            ip_network(entry, strict=False) for entry in settings.trusted_proxy_networks_text()
        ]

    def address(self, request: Request) -> str:
        """The client's address: the peer, or the first untrusted hop of X-Forwarded-For behind our proxies."""
        peer = request.client.host if request.client else "unknown"
        if not self._trusted(peer):
            return peer
        hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.proxies)

    async def _retry_after(self, item: RateLimitItem, address: str) -> int:
        stats = await self.limiter.get_window_stats(item, address)
        return math.ceil(stats.reset_time - time.time())

    async def refuse_if_guessing(self, address: str) -> None:
        """429 for an address that sent too many wrong tokens lately (a dict lookup: every request asks)."""
        until = self.guessing.get(address)
        if until is None:
            return
        left = until - time.time()
        if left <= 0:
            del self.guessing[address]
            return
        raise TooManyRequests("Too many requests with a wrong access token; try again later", math.ceil(left))

    async def wrong_token(self, address: str) -> None:
        """Count a token that did not open what it was sent for; a full window stops the address."""
        await self.limiter.hit(self.failed_tokens, "token", address)
        stats = await self.limiter.get_window_stats(self.failed_tokens, "token", address)
        if stats.remaining <= 0:
            if len(self.guessing) > GUESSERS_KEPT:
                now = time.time()
                self.guessing = {a: until for a, until in self.guessing.items() if until > now}
            self.guessing[address] = stats.reset_time

    async def open_checkout(self, address: str) -> None:
        """Count a checkout; 429 past the limit."""
        if not await self.limiter.hit(self.checkout, "checkout", address):
            retry = await self._retry_after(self.checkout, address)
            raise TooManyRequests("Too many checkouts from your address; try again later", retry)

    @asynccontextmanager
    async def upload_slot(self, address: str) -> AsyncIterator[None]:
        """Hold one of the address's upload slots for the duration of an upload; 429 when none is free."""
        key = f"uploads/{address}"
        taken = await self.storage.incr(key, UPLOAD_SLOT_SECONDS)
        try:
            if taken > self.uploads_in_flight:
                raise TooManyRequests(
                    f"You already have {self.uploads_in_flight} uploads in progress; wait for one to finish",
                    UPLOAD_RETRY_AFTER_S,
                )
            yield
        finally:
            await self.storage.decr(key)
