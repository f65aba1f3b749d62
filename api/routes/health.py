"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import StateDep
from ecomdream.metrics import DEPENDENCY_UP

router = APIRouter(tags=["health"])
log = logging.getLogger("ecomdream.api.health")

CHECK_TIMEOUT_S = 3.0
# The public answer names the part and one of these; the error itself (hosts, ports, paths) goes to the log.
DownReason = Literal["timeout", "unhealthy", "not answering"]


class Unhealthy(Exception):
    """The part answered, and said it cannot serve."""


class HealthPublic(BaseModel):
    """The process is alive."""

    code: int = 200
    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    """Which dependencies answer, and whether payments and training go to sandboxes or live providers."""

    code: int
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["up", "down"]]
    errors: dict[str, DownReason]
    providers: dict[str, Literal["sandbox", "live"]]


@router.get("/health", response_model=HealthPublic)
async def health() -> HealthPublic:
    """Liveness: answers as long as the process serves requests."""
    return HealthPublic()


async def _check(name: str, probe: Awaitable[object]) -> DownReason | None:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:
        log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
        if isinstance(exc, TimeoutError):
            return "timeout"
        return "unhealthy" if isinstance(exc, Unhealthy) else "not answering"
    return None


@router.get("/ready", response_model=ReadyPublic, responses={503: {"model": ReadyPublic}})
async def ready(state: StateDep) -> JSONResponse:
    """Readiness: 200 only when Temporal, Postgres and S3 all answer."""

    async def postgres() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def temporal() -> None:
        if not await state.temporal.service_client.check_health():
            raise Unhealthy("Temporal reports itself unhealthy")

    probes = {"postgres": postgres(), "temporal": temporal(), "s3": state.storage.ping()}
    results = await asyncio.gather(*(_check(name, probe) for name, probe in probes.items()))
    errors = {name: err for name, err in zip(probes, results, strict=True) if err is not None}
    for name in probes:
        DEPENDENCY_UP.labels(name).set(0 if name in errors else 1)
    settings = state.settings
    body = ReadyPublic(
        code=503 if errors else 200,
        status="unavailable" if errors else "ready",
        checks={name: ("down" if name in errors else "up") for name in probes},
        errors=errors,
        providers={
            "stripe": "live" if settings.stripe_api_key else "sandbox",
            "replicate": "live" if settings.replicate_api_token else "sandbox",
        },
    )
    return JSONResponse(body.model_dump(), status_code=body.code)
