"""Signed callbacks to API clients: one attempt per activity run, retried by Temporal for up to three days.

The URL and the secret are read from Postgres at each attempt (never from history), so a changed URL or a
rotated secret applies to the next attempt. Errors name no URL or host: they are kept in history and shown
to operators.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecomdream.callbacks.addresses import CallbackRefused
from ecomdream.callbacks.sealing import SealedSecretError, SecretBox
from ecomdream.clients.callbacks import CallbackSender
from ecomdream.contracts.events import CustomerEvent
from ecomdream.contracts.notices import CallbackDelivery, CallbackState
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.repositories.callbacks import CallbackRepository

# One attempt never takes longer than this (the activity's start-to-close timeout is longer still).
ATTEMPT_SECONDS = 20
GONE = 410
NO_URL = "the callback URL was removed before the event was delivered"
UNSEALED = "the signing secret cannot be opened (its key is no longer configured); rotate the secret"


def event_json(event: CustomerEvent) -> str:
    """The body a receiver gets: the event's `{type, timestamp, data}` (the same bytes are signed)."""
    return json.dumps(event.body(), separators=(",", ":"), ensure_ascii=False)


class CallbackActivities:
    """Activities that need the database, the secret box and the callback sender."""

    def __init__(self, sessionmaker: SessionMaker, sender: CallbackSender, box: SecretBox) -> None:
        self.sessionmaker = sessionmaker
        self.sender = sender
        self.box = box

    @activity.defn
    async def deliver_callback(self, event: CustomerEvent) -> CallbackDelivery:
        """POST the signed event once; a 2xx delivers, a 410 gives up, anything else fails (and is retried)."""
        async with transaction(self.sessionmaker) as session:
            repository = CallbackRepository(session)
            row = await repository.state(event.event_id)
            callback = await repository.of_payment(event.payment_id)
            if row is not None and row.callback_state == CallbackState.DELIVERED.value:
                # An earlier attempt delivered, and its worker died before telling Temporal.
                return CallbackDelivery(state=CallbackState.DELIVERED, attempts=row.callback_attempts)
            if callback is None or callback.url is None or callback.sealed_secret is None:
                await repository.give_up(event.event_id, NO_URL)
                return CallbackDelivery(state=CallbackState.GAVE_UP, error=NO_URL)
            try:
                url, secret = callback.url, self.box.open(callback.sealed_secret, event.payment_id)
            except SealedSecretError:
                activity.logger.exception("callback secret of event %s does not open", event.event_id)
                await repository.give_up(event.event_id, UNSEALED)
                return CallbackDelivery(state=CallbackState.GAVE_UP, error=UNSEALED)
        state, error = await self._attempt(url, event, secret)
        async with transaction(self.sessionmaker) as session:
            attempts = await CallbackRepository(session).attempted(
                event.event_id, state, error, datetime.now(UTC)
            )
        if state is CallbackState.FAILING:
            raise ApplicationError(f"attempt {attempts}: {error}", type="CallbackFailed")
        return CallbackDelivery(state=state, attempts=attempts, error=error)

    async def _attempt(self, url: str, event: CustomerEvent, secret: str) -> tuple[CallbackState, str | None]:
        """One POST and what came of it (the error in words an operator and the customer understand)."""
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                answer = await self.sender.post(url, event.event_id, event_json(event), secret)
        except CallbackRefused as refused:
            return CallbackState.FAILING, refused.message
        except (TimeoutError, httpx.TimeoutException):
            return CallbackState.FAILING, f"the receiver did not answer within {ATTEMPT_SECONDS} s"
        except httpx.HTTPError as failed:
            return CallbackState.FAILING, f"could not reach the receiver ({type(failed).__name__})"
        if 200 <= answer.status_code < 300:
            return CallbackState.DELIVERED, None
        if answer.status_code == GONE:
            return CallbackState.GAVE_UP, "the receiver answered 410 Gone: no more attempts"
        if 300 <= answer.status_code < 400:
            return (
                CallbackState.FAILING,
                f"the receiver answered HTTP {answer.status_code} (redirects are not followed)",
            )
        return CallbackState.FAILING, f"the receiver answered HTTP {answer.status_code}"

    @activity.defn
    async def give_up_callback(self, event: CustomerEvent) -> None:
        """Three days of failed attempts: the event is marked given up (its last error stays)."""
        async with transaction(self.sessionmaker) as session:
            await CallbackRepository(session).give_up(event.event_id)
