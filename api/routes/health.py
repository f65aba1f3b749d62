"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import StateDep
from ecomdream.metrics import DEPENDENCY_UP

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


class HealthPublic(BaseModel):
    """The process is alive."""

    code: int = 200
    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    """Which dependencies answer, and whether payments and training go to sandboxes or live providers."""

    code: int
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["up", "down"]]
    errors: dict[str, str]
    providers: dict[str, Literal["sandbox", "live"]]


@router.get("/health", response_model=HealthPublic)
async def health() -> HealthPublic:
    """Liveness: answers as long as the process serves requests."""
    return HealthPublic()


async def _check(probe: Awaitable[object]) -> str | None:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
    return None


@router.get("/ready", response_model=ReadyPublic, responses={503: {"model": ReadyPublic}})
async def ready(state: StateDep) -> JSONResponse:
    """Readiness: 200 only when Temporal, Postgres and S3 all answer."""

    async def postgres() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def temporal() -> None:
        if not await state.temporal.service_client.check_health():
            raise RuntimeError("Temporal reports itself unhealthy")

    names = ("postgres", "temporal", "s3")
    results = await asyncio.gather(
        _check(postgres()),
        _check(temporal()),
        _check(state.storage.ping()),
    )
    errors = {name: err for name, err in zip(names, results, strict=True) if err is not None}
    for name in names:
        DEPENDENCY_UP.labels(name).set(0 if name in errors else 1)
    settings = state.settings
    body = ReadyPublic(
        code=503 if errors else 200,
        status="unavailable" if errors else "ready",
        checks={name: ("down" if name in errors else "up") for name in names},
        errors=errors,
        providers={
            "stripe": "live" if settings.stripe_api_key else "sandbox",
            "replicate": "live" if settings.replicate_api_token else "sandbox",
        },
    )
    return JSONResponse(body.model_dump(), status_code=body.code)
