"""Live progress: a model's customer events as Server-Sent Events, so a browser needn't poll."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.access import Caller, Credentials, get_caller, version_of
from api.deps import StateDep
from api.errors import AUTH_RESPONSES
from api.live import FALLBACK_WAIT
from api.state import AppState
from ecomdream.contracts.events import EventType
from ecomdream.errors import InvalidRequest, NotFound
from ecomdream.models import Version, VersionStatus
from ecomdream.repositories.events import EventRepository

router = APIRouter(prefix="/api/v1/versions", tags=["versions"])

# A stream watching a training ends with its outcome; one opened on a ready model follows its prompts.
ENDS_ANY_STREAM = frozenset(
    {EventType.VERSION_FAILED, EventType.VERSION_CANCELLED, EventType.VERSION_DELETED}
)
PING_SECONDS = 15
# How long a browser waits before reconnecting after a dropped stream (it sends `Last-Event-ID`).
RETRY_MS = 3000


async def _stream_caller(
    request: Request,
    state: StateDep,
    credentials: Credentials,
    access_token: Annotated[str | None, Query(max_length=200)] = None,
) -> Caller:
    """The bearer token, or `?access_token=` for browsers' EventSource, which cannot send headers."""
    if credentials is None and access_token:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=access_token)
    return await get_caller(request, state, credentials)


def _last_seen(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    try:
        seen = int(value.strip())
    except ValueError:
        raise InvalidRequest("Last-Event-ID must be the id of an event this stream sent") from None
    if seen < 0:
        raise InvalidRequest("Last-Event-ID must be the id of an event this stream sent")
    return seen


def _status(version: Version) -> ServerSentEvent:
    """Where the model is when the stream opens (no id: resuming never skips or repeats events for it)."""
    data = {
        "status": version.status,
        "progress": version.progress,
        "images_left": max(version.images_quota - version.images_generated, 0),
    }
    return ServerSentEvent(data=json.dumps(data), event="status", retry=RETRY_MS)


async def _still_opens(state: AppState, caller: Caller, version_id: uuid.UUID) -> bool:
    async with state.read_sessionmaker() as session:
        try:
            await version_of(session, caller, version_id)
        except NotFound:
            return False
    return True


@router.get(
    "/{version_id}/events",
    responses={
        **AUTH_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
    },
)
async def version_events(
    version_id: uuid.UUID,
    state: StateDep,
    caller: Annotated[Caller, Depends(_stream_caller)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """The model's events as they happen (owner or share token): status changes, training, prompts.

    Each event's `id` is its place in the model's history; a client that reconnects with `Last-Event-ID` gets
    what it missed. The stream ends when the model is ready (prompts of a model that was ready when the
    stream opened keep coming), failed, cancelled or deleted. Browsers may pass the token as `?access_token=`
    (EventSource cannot send headers); prefer a read-only share token there.
    """
    after = _last_seen(last_event_id)
    async with state.read_sessionmaker() as session:
        version, _ = await version_of(session, caller, version_id)
    follows_prompts = version.status == VersionStatus.READY
    finished = version.status in (VersionStatus.FAILED, VersionStatus.DELETED)

    async def events() -> AsyncIterator[ServerSentEvent]:
        seen = after
        yield _status(version)
        with state.feed.subscribe(str(version_id)) as woken:
            while True:
                woken.clear()
                async with state.read_sessionmaker() as session:
                    rows = await EventRepository(session).of_version(version_id, seen)
                for row in rows:
                    seen = row.seq
                    body = {"type": row.type, "timestamp": row.occurred_at.isoformat(), "data": row.data}
                    yield ServerSentEvent(data=json.dumps(body), event=row.type, id=str(row.seq))
                    kind = EventType(row.type)
                    # A stream resumed from before the model was ready was watching its training: it ends
                    # at ready too, like the stream it resumes.
                    watched_training = not follows_prompts or after > 0
                    if kind in ENDS_ANY_STREAM or (kind is EventType.VERSION_READY and watched_training):
                        return
                if rows:
                    continue
                if finished:
                    return  # its last events were sent before (or were deleted with it)
                try:
                    await asyncio.wait_for(woken.wait(), FALLBACK_WAIT)
                except TimeoutError:
                    if not await _still_opens(state, caller, version_id):
                        return  # the token was rotated or the share link revoked

    return EventSourceResponse(events(), ping=PING_SECONDS, headers={"Cache-Control": "no-store"})
