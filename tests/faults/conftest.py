"""Every fault test leaves the shared stack as it found it: all parts running, knobs restored, nothing held."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ecomdream.devstack.stack import Stack
from tests.faults.helpers import RELEASE_COMMITS, autocommit, start_worker, wait_ready


async def heal(stack: Stack, db: AsyncEngine) -> None:
    """Bring back whatever a fault test stopped, held or killed; wait until the API is ready."""
    if not stack.postgres.process.running:
        stack.postgres.start()
    await autocommit(db, RELEASE_COMMITS, "SELECT pg_reload_conf()")
    if not stack.temporal.process.running:
        stack.temporal.start()
    if not stack.worker.running:
        await start_worker(stack)
    await wait_ready(stack)


@pytest.fixture(autouse=True)
async def healthy_stack(stack: Stack, db_engine: AsyncEngine) -> AsyncIterator[None]:
    """Restore the Replicate sandbox's knobs and holds and every part of the stack after the test, pass or fail."""
    async with httpx.AsyncClient(base_url=stack.replicate_url, timeout=10) as sandbox:
        knobs = (await sandbox.get("/_sandbox/config")).json()
        try:
            yield
        finally:
            await sandbox.post("/_sandbox/release")
            await heal(stack, db_engine)
            await sandbox.post("/_sandbox/config", json=knobs)
