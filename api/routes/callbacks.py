"""A journey's signed callbacks: change where its events go, rotate the secret they are signed with."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.access import Caller, CallerDep, payment_of
from api.deps import StateDep
from api.errors import KEYED_RESPONSES, WRITE_RESPONSES
from api.idempotency import Answer, Claim, idempotency_key, once, request_hash
from api.schemas.payments import CallbackPublic, CallbackUpdate, WebhookSecretPublic
from api.state import AppState
from ecomdream.db.session import transaction

router = APIRouter(prefix="/api/v1/payments", tags=["callbacks"])
RESPONSES: dict[int | str, dict[str, object]] = {**KEYED_RESPONSES, **WRITE_RESPONSES, 400: {}}


async def _owned(state: AppState, caller: Caller, payment_id: uuid.UUID) -> None:
    """The caller owns this model's initial payment (404 for strangers, 400 for an add-on pack's)."""
    async with state.read_sessionmaker() as session:
        payment = await payment_of(session, caller, payment_id)
        await state.callbacks.refuse_addon(session, payment)


async def _claim(
    state: AppState, caller: Caller, request: Request, *asked: object
) -> Claim | JSONResponse | None:
    """An `Idempotency-Key`'s claim (or the first answer to replay); None without a key."""
    key = idempotency_key(request)
    if key is None:
        return None
    return await state.idempotency.claim(caller.token_digest, key, request_hash(*asked))


@router.put("/{payment_id}/callback", response_model=CallbackPublic, responses=RESPONSES)
async def set_callback(
    payment_id: uuid.UUID, body: CallbackUpdate, request: Request, state: StateDep, caller: CallerDep
) -> JSONResponse:
    """Send the journey's events to `callback_url` from the next delivery attempt on (`null`: to nobody).
    The first URL of a payment created without one answers its `webhook_secret` (shown once)."""
    await _owned(state, caller, payment_id)
    url = await state.callbacks.checked(body.callback_url) if body.callback_url else None
    claim = await _claim(state, caller, request, "callback", str(payment_id), url)
    if isinstance(claim, JSONResponse):
        return claim

    async def change() -> Answer:
        async with transaction(state.sessionmaker) as session:
            secret = await state.callbacks.change(session, payment_id, url)
        answer = CallbackPublic(payment_id=payment_id, callback_url=url, webhook_secret=secret)
        return 200, answer.model_dump(mode="json")

    return await once(state.idempotency, claim, change)


@router.post(
    "/{payment_id}/callback/secret", status_code=201, response_model=WebhookSecretPublic, responses=RESPONSES
)
async def rotate_secret(
    payment_id: uuid.UUID, request: Request, state: StateDep, caller: CallerDep
) -> JSONResponse:
    """A new signing secret, shown once; the next delivery attempt is signed with it and the old one stops."""
    await _owned(state, caller, payment_id)
    claim = await _claim(state, caller, request, "callback-secret", str(payment_id))
    if isinstance(claim, JSONResponse):
        return claim

    async def rotate() -> Answer:
        async with transaction(state.sessionmaker) as session:
            secret = await state.callbacks.rotate(session, payment_id)
        return 201, WebhookSecretPublic(payment_id=payment_id, webhook_secret=secret).model_dump(mode="json")

    return await once(state.idempotency, claim, rotate)
