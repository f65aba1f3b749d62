"""The foundation: the stack comes up, migrations apply and revert, /ready tells the truth."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ecomdream.db.migrate import downgrade, upgrade
from ecomdream.devstack.stack import Stack
from tests.fixtures.stack import eventually

TABLES = {
    "plans",
    "payments",
    "versions",
    "prompts",
    "images",
    "quota_grants",
    "shares",
    "idempotent_requests",
    "customer_events",
    "deletions",
}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


class TestMigrations:
    async def test_apply_on_empty_database_and_downgrade_cleanly(self, stack: Stack, db: AsyncEngine) -> None:
        async with db.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text("DROP DATABASE IF EXISTS migration_check"))
            await conn.execute(text("CREATE DATABASE migration_check"))
        url = stack.postgres.url("migration_check")
        assert await _tables(url) == set()

        await asyncio.to_thread(upgrade, url)
        assert await _tables(url) == TABLES
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            plans = (
                await conn.execute(
                    text("SELECT plan_name, is_init, price, feature_amount_images FROM plans ORDER BY id")
                )
            ).all()
        await engine.dispose()
        assert [tuple(p) for p in plans] == [
            ("basic_init", True, 1300, 100),
            ("basic_extra_creds", False, 1300, 1000),
        ]

        await asyncio.to_thread(downgrade, url)
        assert await _tables(url) == set()
        await asyncio.to_thread(upgrade, url)
        assert await _tables(url) == TABLES

    async def test_check_constraints_reject_out_of_range_values(self, db: AsyncEngine) -> None:
        with pytest.raises(Exception, match="ck_plans_images_positive"):
            async with db.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO plans (is_init, price, plan_name, plan_description, feature_amount_images)"
                        " VALUES (true, 100, 'broken', 'x', 0)"
                    )
                )


class TestHealth:
    async def test_health_and_docs(self, api: httpx.AsyncClient) -> None:
        assert (await api.get("/health")).json() == {"code": 200, "status": "ok"}
        docs = await api.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()

    async def test_ready_reports_every_part_up_and_sandbox_mode(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/ready")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["checks"] == {"postgres": "up", "temporal": "up", "s3": "up"}
        assert body["errors"] == {}
        assert body["providers"] == {"stripe": "sandbox", "replicate": "sandbox"}

    async def test_ready_reports_stopped_postgres_as_down_then_recovers(
        self, stack: Stack, api: httpx.AsyncClient
    ) -> None:
        stack.postgres.stop()
        try:
            response = await api.get("/ready")
            assert response.status_code == 503
            body = response.json()
            assert body["checks"] == {"postgres": "down", "temporal": "up", "s3": "up"}
            assert body["errors"] == {"postgres": "not answering"}
            assert str(stack.ports.postgres) not in response.text, "no host or port in the public answer"
            plans = await api.get("/api/v1/payments/plans/list")
            assert plans.status_code == 503
            assert "temporarily unavailable" in plans.json()["message"]
        finally:
            stack.postgres.start()

        async def ready() -> int:
            return (await api.get("/ready")).status_code

        await eventually(ready, lambda status: status == 200, within=30)

    async def test_unknown_route_has_the_error_shape(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/api/v1/nothing-here")
        assert response.status_code == 404
        assert response.json() == {"code": 404, "message": "No such endpoint"}
