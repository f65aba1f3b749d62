"""Callback URLs and signing secrets of journeys: checked, sealed and stored for the routes.

A secret is shown once, when it is made; Postgres keeps it sealed (`ecomdream.callbacks.sealing`).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.callbacks.addresses import CallbackPolicy, resolve
from ecomdream.callbacks.sealing import SecretBox, new_secret
from ecomdream.config import Settings
from ecomdream.errors import InvalidRequest
from ecomdream.models import Payment
from ecomdream.repositories.callbacks import CallbackRepository
from ecomdream.repositories.payments import PlanRepository

ADDON_HAS_NONE = (
    "Callbacks belong to the payment that bought the model: an add-on pack's events go to its model's "
    "callback URL"
)


class Callbacks:
    """Where a journey's events go, and the secret they are signed with."""

    def __init__(self, box: SecretBox, policy: CallbackPolicy) -> None:
        self.box = box
        self.policy = policy

    @classmethod
    def from_settings(cls, settings: Settings) -> Callbacks:
        """Sealed with the configured keys; URLs checked by the provider mode (live: public https only)."""
        return cls(SecretBox.from_settings(settings), CallbackPolicy.from_settings(settings))

    async def checked(self, url: str) -> str:
        """The URL, once it is one we will send events to (422 `CallbackRefused` otherwise)."""
        await resolve(url, self.policy)
        return url.strip()

    async def refuse_addon(self, session: AsyncSession, payment: Payment) -> None:
        """Only a model's initial payment has a callback (400 for an add-on pack's)."""
        plan = await PlanRepository(session).get(payment.plan_id)
        if plan is None or not plan.is_init:
            raise InvalidRequest(ADDON_HAS_NONE)

    async def register(self, session: AsyncSession, payment_id: uuid.UUID, url: str) -> str:
        """A new payment's callback: its URL and a fresh secret, returned to be shown once."""
        repository = CallbackRepository(session)
        await repository.set_url(payment_id, url)
        return await self._new_secret(repository, payment_id)

    async def change(self, session: AsyncSession, payment_id: uuid.UUID, url: str | None) -> str | None:
        """Send events to url from now on (None: stop); a payment's first URL gets its secret (returned)."""
        repository = CallbackRepository(session)
        current = await repository.of_payment(payment_id)
        await repository.set_url(payment_id, url)
        if url is None or (current is not None and current.sealed_secret is not None):
            return None
        return await self._new_secret(repository, payment_id)

    async def rotate(self, session: AsyncSession, payment_id: uuid.UUID) -> str:
        """A new secret; the next delivery attempt is signed with it (the old one stops at once)."""
        return await self._new_secret(CallbackRepository(session), payment_id)

    async def _new_secret(self, repository: CallbackRepository, payment_id: uuid.UUID) -> str:
        secret = new_secret()
        await repository.set_secret(payment_id, self.box.seal(secret, payment_id))
        return secret
