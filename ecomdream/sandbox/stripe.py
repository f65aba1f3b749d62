"""Stripe sandbox: the subset of the Stripe API ecomdream uses, a hosted checkout page and signed webhooks.

Run it with `python -m ecomdream.sandbox.stripe --port 12111 --webhook-url URL --webhook-secret whsec_...`
and point the official SDK at it: `StripeClient(key, base_addresses={"api": "http://127.0.0.1:12111"})`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import RequestResponseEndpoint

from ecomdream.sandbox.stripe_api import build_api_router
from ecomdream.sandbox.stripe_control import build_control_router
from ecomdream.sandbox.stripe_core import SandboxConfig, StripeAPIError, new_id
from ecomdream.sandbox.stripe_pages import build_pages_router
from ecomdream.sandbox.stripe_state import API_VERSION, SandboxState
from ecomdream.sandbox.stripe_webhooks import WebhookDispatcher

__all__ = ["SandboxConfig", "create_app", "main"]

logger = logging.getLogger("ecomdream.sandbox.stripe")


def create_app(config: SandboxConfig) -> FastAPI:
    """Build the sandbox ASGI app; its state lives as long as the app object."""
    state = SandboxState(config)
    dispatcher = WebhookDispatcher(state, config)
    state.on_event = dispatcher.enqueue

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_expire_sessions_forever(state, config.expiry_sweep_interval))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await dispatcher.aclose()

    app = FastAPI(title="Stripe sandbox", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = state
    app.add_exception_handler(StripeAPIError, _render_stripe_error)
    app.middleware("http")(_log_and_tag)
    app.include_router(build_control_router(state, dispatcher))
    app.include_router(build_pages_router(state))
    app.include_router(build_api_router(state))
    return app


async def _render_stripe_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StripeAPIError)
    # 4xx answers are final; telling the SDK not to retry mirrors Stripe's own header.
    headers = {"Stripe-Should-Retry": "false"}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _log_and_tag(request: Request, call_next: RequestResponseEndpoint) -> Response:
    started = time.monotonic()
    response = await call_next(request)
    if request.url.path.startswith("/v1/"):
        response.headers["Request-Id"] = new_id("req_", 14)
        response.headers["Stripe-Version"] = request.headers.get("Stripe-Version", API_VERSION)
    elapsed = (time.monotonic() - started) * 1000
    target = f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path
    logger.info("%s %s -> %d (%.1f ms)", request.method, target, response.status_code, elapsed)
    return response


async def _expire_sessions_forever(state: SandboxState, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        state.expire_due()


def parse_args(argv: Sequence[str] | None = None) -> SandboxConfig:
    """Turn command-line flags into a SandboxConfig."""
    parser = argparse.ArgumentParser(prog="python -m ecomdream.sandbox.stripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111, help="port to bind (default 12111)")
    parser.add_argument("--webhook-url", default=None, help="where events are POSTed (settable later)")
    parser.add_argument("--webhook-secret", default="whsec_sandbox", help="endpoint signing secret")
    parser.add_argument(
        "--public-url", default=None, help="base of hosted page URLs (default http://host:port)"
    )
    parser.add_argument(
        "--api-key", default=None, help="the only accepted secret key (default: any sk_test_)"
    )
    parser.add_argument("--retry-base-delay", type=float, default=1.0, help="first webhook retry delay, s")
    parser.add_argument("--max-attempts", type=int, default=5, help="webhook delivery attempts per event")
    parser.add_argument("--delivery-timeout", type=float, default=10.0, help="webhook request timeout, s")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return SandboxConfig(
        host=args.host,
        port=args.port,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        public_url=args.public_url,
        api_key=args.api_key,
        retry_base_delay=args.retry_base_delay,
        max_attempts=max(1, args.max_attempts),
        delivery_timeout=args.delivery_timeout,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the sandbox until interrupted."""
    config = parse_args(argv)
    logger.info(
        "Stripe sandbox on http://%s:%d (pages at %s, webhooks to %s, API version %s)",
        config.host,
        config.port,
        config.base_url,
        config.webhook_url or "nowhere yet",
        API_VERSION,
    )
    uvicorn.run(create_app(config), host=config.host, port=config.port, access_log=False, log_config=None)


if __name__ == "__main__":
    main()
