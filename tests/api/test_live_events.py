"""Live progress from the outside: a browser's view of `GET /api/v1/versions/{id}/events`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from temporalio.client import Client

from ecomdream.contracts.events import CustomerEvent, EventType, event_id
from ecomdream.repositories.events import EventRepository
from tests.api.helpers import stranger
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, paid_payment, train
from tests.fixtures.photos import valid_photos
from tests.fixtures.wallet import WALLET

STREAM_DEADLINE = 60.0


@dataclass
class Sse:
    """One Server-Sent Event as a browser's EventSource sees it."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


class Stream:
    """An open event stream read line by line (comments such as pings are skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self, within: float = STREAM_DEADLINE) -> Sse | None:
        """The next event, or None when the server ended the stream."""
        return await asyncio.wait_for(self._next(), within)

    async def _next(self) -> Sse | None:
        event = Sse()
        seen_field = False
        async for line in self.lines:
            if not line:
                if seen_field:
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            seen_field = True
            if name == "event":
                event.event = value
            elif name == "id":
                event.id = value
            elif name == "data":
                event.data = f"{event.data}\n{value}" if event.data else value
            else:
                event.fields[name] = value
        return None

    async def until_end(self) -> list[Sse]:
        """Every event up to the end the server chose."""
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


@asynccontextmanager
async def stream(
    api: httpx.AsyncClient, version_id: str, token: str | None, **headers: str
) -> AsyncIterator[Stream]:
    """Open the stream as a browser would (no wallet: the token is exactly the one given)."""
    sent = dict(headers)
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        httpx.AsyncClient(base_url=str(api.base_url), timeout=httpx.Timeout(60, read=90)) as client,
        client.stream("GET", f"/api/v1/versions/{version_id}/events", headers=sent) as response,
    ):
        yield Stream(response)


async def write_event(db: AsyncEngine, payment_id: str, version_id: str, marker: str) -> None:
    """An event as the journey's event pipeline writes it to the outbox."""
    event = CustomerEvent(
        event_id=event_id(uuid.UUID(payment_id), EventType.PROMPT_SUCCEEDED, marker),
        type=EventType.PROMPT_SUCCEEDED,
        payment_id=uuid.UUID(payment_id),
        version_id=uuid.UUID(version_id),
        occurred_at=datetime.now(UTC),
        data={"prompt_id": marker},
    )
    async with async_sessionmaker(db)() as session, session.begin():
        await EventRepository(session).append(event, callback_state=None, email_state=None)


class TestLiveProgress:
    async def test_a_training_streams_to_ready_and_ends(
        self, api: httpx.AsyncClient, temporal: Client
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        response = await train(api, payment_id, as_files(valid_photos(5)), cls="teapot")
        assert response.status_code == 201, response.text
        version_id = response.json()["version_id"]

        async with stream(api, version_id, WALLET.token(version_id)) as live:
            assert live.response.status_code == 200
            assert live.response.headers["content-type"].startswith("text/event-stream")
            first = await live.next()
            assert first is not None
            assert first.event == "status"
            assert first.body["status"] in {"validating", "training", "ready"}
            events = await live.until_end()

        types = [e.event for e in events]
        assert types[-1] == "version.ready", types
        assert "version.training" in types, types
        assert types.index("version.training") < types.index("version.ready")
        ids = [int(e.id or 0) for e in events]
        assert ids == sorted(set(ids)), "ids are the events' places in order, each once"
        ready = events[-1].body
        assert ready["type"] == "version.ready"
        assert ready["data"]["version_id"] == version_id

        # A browser that lost the stream after the first event gets the rest, and nothing twice.
        async with stream(
            api, version_id, WALLET.token(version_id), **{"Last-Event-ID": str(ids[0])}
        ) as again:
            replayed = await again.until_end()
        assert [e.id for e in replayed if e.id is not None] == [str(i) for i in ids[1:]]

    async def test_a_ready_models_stream_carries_new_prompts_to_owner_and_share_link(
        self, api: httpx.AsyncClient, temporal: Client
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        share = (await api.post(f"/api/v1/versions/{version_id}/shares", json={})).json()["token"]
        async with (
            stream(api, version_id, WALLET.token(version_id)) as owner,
            stream(api, version_id, share) as viewer,
        ):
            for live in (owner, viewer):
                assert live.response.status_code == 200
            made = await prompt(api, version_id)
            assert made.status_code == 201, made.text
            prompt_id = made.json()["prompt_id"]
            for live in (owner, viewer):
                while (event := await live.next()) is not None:
                    if event.event == "prompt.succeeded" and event.body["data"]["prompt_id"] == prompt_id:
                        break
                assert event is not None, "the stream ended before the prompt's event"

    async def test_events_reach_an_open_stream_at_once_and_resume_after_the_last_seen(
        self, api: httpx.AsyncClient, temporal: Client, db: AsyncEngine
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        token = WALLET.token(version_id)
        async with stream(api, version_id, token) as live:
            await write_event(db, payment_id, version_id, "first")
            while (event := await live.next(within=4)) is not None and event.data.find('"first"') < 0:
                pass
            assert event is not None
            last_seen = event.id
            assert last_seen is not None
        await write_event(db, payment_id, version_id, "second")
        async with stream(api, version_id, token, **{"Last-Event-ID": last_seen}) as resumed:
            status = await resumed.next()
            assert status is not None
            assert status.event == "status"
            missed = await resumed.next(within=4)
        assert missed is not None
        assert missed.body["data"]["prompt_id"] == "second"

    async def test_who_may_listen(self, api: httpx.AsyncClient, temporal: Client) -> None:
        _, version_id = await ready_model(api, temporal)
        async with stream(api, version_id, None) as anonymous:
            assert anonymous.response.status_code == 401
        async with stream(api, version_id, None, **await stranger(api)) as outsider:
            assert outsider.response.status_code == 404
        async with stream(api, version_id, WALLET.token(version_id), **{"Last-Event-ID": "abc"}) as bad:
            assert bad.response.status_code == 400
            await bad.response.aread()
            assert "Last-Event-ID" in bad.response.json()["message"]
        # EventSource cannot send headers: the token may come as a query parameter.
        async with (
            httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as client,
            client.stream(
                "GET",
                f"/api/v1/versions/{version_id}/events",
                params={"access_token": WALLET.token(version_id)},
            ) as browser,
        ):
            assert browser.status_code == 200
