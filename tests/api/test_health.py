"""The public /ready names the part that is down and why in a word; the error itself goes to the log only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from api.routes import health
from ecomdream.config import Settings

# Nothing listens on port 1: the connection is refused, and the error names the host and port.
UNREACHABLE_DB = "postgresql+asyncpg://ecomdream:DbPassword@127.0.0.1:1/ecomdream"


class Storage:
    """An S3 that answers, or one that never does."""

    def __init__(self, *, hangs: bool) -> None:
        self.hangs = hangs

    async def ping(self) -> None:
        if self.hangs:
            await asyncio.Event().wait()


def temporal(*, healthy: bool) -> SimpleNamespace:
    """A Temporal client whose health check says `healthy`."""

    async def check_health() -> bool:
        return healthy

    return SimpleNamespace(service_client=SimpleNamespace(check_health=check_health))


async def ready(state: SimpleNamespace) -> httpx.Response:
    """GET /ready on an app holding state."""
    app = FastAPI()
    app.include_router(health.router)
    app.state.ecomdream = state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get("/ready")


@pytest.fixture
async def down() -> AsyncIterator[SimpleNamespace]:
    """Postgres refusing connections, Temporal unhealthy and S3 hanging."""
    engine = create_async_engine(UNREACHABLE_DB)
    yield SimpleNamespace(
        settings=Settings(_env_file=None),
        engine=engine,
        temporal=temporal(healthy=False),
        storage=Storage(hangs=True),
    )
    await engine.dispose()


async def test_every_part_down_is_named_with_a_fixed_reason_and_no_internals(
    down: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.5)
    with caplog.at_level(logging.WARNING, logger="ecomdream.api.health"):
        response = await ready(down)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"postgres": "down", "temporal": "down", "s3": "down"}
    assert body["errors"] == {"postgres": "not answering", "temporal": "unhealthy", "s3": "timeout"}
    assert body["providers"] == {"stripe": "sandbox", "replicate": "sandbox"}
    for internal in ("127.0.0.1", "Connect", "Error", "asyncpg", "DbPassword", "Temporal reports"):
        assert internal not in response.text

    logged = [r.getMessage() for r in caplog.records if r.name == "ecomdream.api.health"]
    assert len(logged) == 3, "one warning per part that is down"
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "ecomdream.api.health")
    (postgres,) = [line for line in logged if "postgres" in line]
    assert "127.0.0.1" in postgres, "the log keeps the full error"
    assert any("Temporal reports itself unhealthy" in line for line in logged)
    assert any("s3 is down: TimeoutError" in line for line in logged)
