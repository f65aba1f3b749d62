"""Replicate sandbox: an HTTP server speaking the parts of Replicate's API the app uses, for the official SDK.

Point the SDK at it with `replicate.Client(api_token="r8_sandbox", base_url="http://127.0.0.1:PORT")`.
Trainings and predictions advance on a clock, outputs are real files served by the sandbox, webhooks are
signed like Replicate's (Standard Webhooks), and `/_sandbox/*` lets tests inject faults, hold answers and
inspect traffic.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ecomdream.sandbox.replicate_api import build_router
from ecomdream.sandbox.replicate_holds import HoldRequest, Holds, ReleaseRequest, ReleasingServer, held_route
from ecomdream.sandbox.replicate_jobs import Engine
from ecomdream.sandbox.replicate_state import (
    DEFAULT_API_TOKEN,
    DEFAULT_WEBHOOK_SECRET,
    JSON,
    ApiProblem,
    JobKind,
    SandboxSettings,
    Store,
)
from ecomdream.sandbox.replicate_webhooks import WebhookDispatcher, signing_key

__all__ = ["SandboxSettings", "create_app", "main"]

log = logging.getLogger("ecomdream.sandbox.replicate")

TRAINING_SECONDS_ENV = "ECOMDREAM_SANDBOX_TRAINING_SECONDS"
PREDICTION_SECONDS_ENV = "ECOMDREAM_SANDBOX_PREDICTION_SECONDS"


def _problem(
    status: int, detail: str, title: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    problem = ApiProblem(status, detail, title=title, headers=headers)
    return JSONResponse(
        problem.body(), status_code=status, headers=problem.headers, media_type="application/problem+json"
    )


def create_app(config: SandboxSettings, holds: Holds | None = None) -> FastAPI:
    """The sandbox ASGI app; all state lives in memory inside it (holds: see `replicate_holds`)."""
    holds = holds or Holds()
    store = Store(config)
    dispatcher = WebhookDispatcher(store, config.webhook_secret)
    engine = Engine(store, dispatcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info("Replicate sandbox ready at %s", config.base_url)
        yield
        await engine.aclose()
        await dispatcher.aclose()

    app = FastAPI(title="Replicate sandbox", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ApiProblem)
    async def api_problem(_: Request, exc: ApiProblem) -> Response:
        return _problem(exc.status, exc.detail, exc.title, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and methods also answer in Replicate's problem shape.
        return _problem(exc.status_code, str(exc.detail))

    holdable = held_route(holds)
    app.include_router(build_router(store, engine, holdable))
    delivery = APIRouter(route_class=holdable)

    @app.get("/health")
    async def health() -> JSON:
        """Liveness for process supervisors and tests."""
        return {"status": "ok"}

    @delivery.get("/files/{name}")
    async def files(name: str) -> Response:
        """Output images and training weights, as `replicate.delivery` would serve them."""
        with store.lock:
            found = store.files.get(name)
        if found is None:
            return _problem(404, "Not found.")
        redirect = store.knobs.redirect_outputs_to
        if redirect:
            return RedirectResponse(f"{redirect.rstrip('/')}/files/{name}", status_code=302)
        return Response(content=found[0], media_type=found[1])

    app.include_router(delivery)

    @app.get("/_sandbox/config")
    async def get_config() -> JSON:
        """Current fault and speed knobs."""
        return store.knobs.model_dump()

    @app.post("/_sandbox/config")
    async def set_config(request: Request) -> Response:
        """Merge knob changes (partial JSON object); 422 with pydantic's errors when invalid."""
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                return _problem(422, "config must be a JSON object")
            knobs = store.update_knobs(changes)
        except ValueError as exc:
            detail = str(exc) if not isinstance(exc, ValidationError) else exc.json()
            return _problem(422, detail)
        log.info("sandbox config: %s", changes)
        return JSONResponse(knobs.model_dump())

    def received(kind: JobKind) -> JSON:
        jobs = store.jobs_of(kind)
        with store.lock:
            create_requests = store.create_requests[kind]
        return {
            "count": len(jobs),
            "create_requests": create_requests,
            "results": [
                {"id": job.id, "request": job.request, "object": store.snapshot(job)} for job in jobs
            ],
        }

    @app.get("/_sandbox/trainings")
    async def sandbox_trainings() -> JSON:
        """Every training received (request body and current object), newest first."""
        return received("training")

    @app.get("/_sandbox/predictions")
    async def sandbox_predictions() -> JSON:
        """Every prediction received (request body and current object), newest first."""
        return received("prediction")

    @app.get("/_sandbox/requests")
    async def sandbox_requests() -> JSON:
        """API calls per endpoint (`METHOD /v1/route/{template}`): count, injected faults, unix timestamps."""
        with store.lock:
            endpoints = {
                endpoint: {"count": len(times), "faults": store.faults[endpoint], "timestamps": list(times)}
                for endpoint, times in store.requests.items()
            }
        return {"total": sum(e["count"] for e in endpoints.values()), "endpoints": endpoints}

    @app.get("/_sandbox/webhooks")
    async def sandbox_webhooks() -> JSON:
        """Every webhook message with its delivery state and attempts."""
        deliveries = dispatcher.describe()
        return {"count": len(deliveries), "results": deliveries}

    @app.post("/_sandbox/webhook_secret/rotate")
    async def rotate_webhook_secret() -> JSON:
        """Replace the account's signing secret (deliveries from now on are signed with the new one)."""
        with store.lock:
            store.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        return {"rotated": True}

    @app.get("/_sandbox/holds")
    async def sandbox_holds() -> JSON:
        """Held endpoints, with how many answers each keeps back right now (`waiting`)."""
        return holds.describe()

    @app.post("/_sandbox/hold")
    async def sandbox_hold(body: HoldRequest) -> JSON:
        """Hold `endpoint` (a request log key): each later call is performed (a create creates its job), then
        its answer waits for the release, the client hanging up, or `seconds` (default 300)."""
        holds.hold(body.endpoint, body.seconds)
        log.info("sandbox hold: %s", body.endpoint)
        return holds.describe()

    @app.post("/_sandbox/release")
    async def sandbox_release(body: ReleaseRequest | None = None) -> JSON:
        """Send the answers held for `endpoint` and stop holding it; without one, every endpoint."""
        holds.release(body.endpoint if body else None)
        log.info("sandbox release: %s", body.endpoint if body and body.endpoint else "every endpoint")
        return holds.describe()

    @app.post("/_sandbox/reset")
    async def sandbox_reset() -> JSON:
        """Release held answers, stop jobs and deliveries, forget everything, restore start-up knobs."""
        holds.release()
        await engine.reset()
        await dispatcher.reset()
        store.reset()
        return {"reset": True}

    return app


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def parse_args(argv: Sequence[str] | None = None) -> SandboxSettings:
    """Settings from the command line, with durations defaulting from the environment."""
    parser = argparse.ArgumentParser(prog="python -m ecomdream.sandbox.replicate", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12112)
    parser.add_argument("--public-url", default=None, help="base URL clients use (default http://HOST:PORT)")
    parser.add_argument("--api-token", default=DEFAULT_API_TOKEN)
    parser.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET, help="whsec_<base64>")
    parser.add_argument("--training-seconds", type=float, default=_env_float(TRAINING_SECONDS_ENV, 20.0))
    parser.add_argument("--prediction-seconds", type=float, default=_env_float(PREDICTION_SECONDS_ENV, 3.0))
    parser.add_argument("--webhook-retry-base-seconds", type=float, default=1.0)
    parser.add_argument("--webhook-max-attempts", type=int, default=4)
    parser.add_argument("--account", default="ecomdream", help="username `GET /v1/account` reports")
    args = parser.parse_args(argv)
    try:
        signing_key(args.webhook_secret)
    except ValueError as exc:
        parser.error(f"--webhook-secret: {exc}")
    if args.training_seconds <= 0 or args.prediction_seconds <= 0:
        parser.error("durations must be positive")
    return SandboxSettings(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        api_token=args.api_token,
        webhook_secret=args.webhook_secret,
        training_seconds=args.training_seconds,
        prediction_seconds=args.prediction_seconds,
        webhook_retry_base_seconds=args.webhook_retry_base_seconds,
        webhook_max_attempts=args.webhook_max_attempts,
        account=args.account,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sandbox until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    holds = Holds()
    app = create_app(settings, holds)
    ReleasingServer(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info"), holds
    ).run()


if __name__ == "__main__":
    main()
