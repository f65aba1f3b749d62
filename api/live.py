"""The live feed of customer events: one `LISTEN` per API process, fanned out to the streams it serves.

Each event written to the `customer_events` outbox sends `NOTIFY customer_events, '<version_id>'`
(`EventRepository.append`). Streams subscribe by version and wake when told; they read the events themselves
(by `seq`), so a lost notification costs at most `FALLBACK_WAIT` and nothing is ever skipped. The listening
connection reconnects by itself after a database restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import make_url

from ecomdream.repositories.events import EVENTS_CHANNEL

log = logging.getLogger("ecomdream.api.live")

# Streams look at the outbox this often even when no notification came (listener down, lost NOTIFY).
FALLBACK_WAIT = 5.0
RECONNECT_WAIT = 2.0


class EventFeed:
    """Wakes the streams of a version when one of its events is written."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.dsn = url.render_as_string(hide_password=False)
        self.waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self.task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def subscribe(self, version_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the version gets a new customer event (clear it before each read)."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._listen(), name="customer-event-feed")
        woken = asyncio.Event()
        self.waiters[version_id].add(woken)
        try:
            yield woken
        finally:
            self.waiters[version_id].discard(woken)
            if not self.waiters[version_id]:
                del self.waiters[version_id]

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        for woken in self.waiters.get(payload, ()):
            woken.set()

    async def _listen(self) -> None:
        while True:
            try:
                connection = await asyncpg.connect(self.dsn)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning(
                    "live feed cannot reach Postgres (%s); streams poll meanwhile", type(error).__name__
                )
                await asyncio.sleep(RECONNECT_WAIT)
                continue
            try:
                await self._serve(connection)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close()
            log.warning("live feed lost its Postgres connection; reconnecting")

    async def _serve(self, connection: asyncpg.Connection) -> None:
        """Pass notifications on until the connection is lost."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(EVENTS_CHANNEL, self._notified)
        # Anything written while the feed was down is picked up: wake every stream once.
        for waiters in list(self.waiters.values()):
            for woken in waiters:
                woken.set()
        await lost.wait()

    async def close(self) -> None:
        """Stop listening (at API shutdown)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
