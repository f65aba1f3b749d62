"""Webhook signing and background delivery with Stripe-like retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import httpx

from ecomdream.sandbox.stripe_core import SandboxConfig
from ecomdream.sandbox.stripe_state import DeliveryAttempt, SandboxState

logger = logging.getLogger("ecomdream.sandbox.stripe.webhooks")

_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign_payload(body: str, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header: HMAC-SHA256 keyed by the whole `whsec_...` string (not decoded)."""
    signed = f"{timestamp}.{body}".encode()
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookDispatcher:
    """Delivers events in background tasks so no API response ever waits for the receiver."""

    def __init__(self, state: SandboxState, config: SandboxConfig) -> None:
        self._state = state
        self._config = config
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def enqueue(self, event_id: str) -> None:
        """Start delivering `event_id` (a fresh series of attempts, each freshly signed)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Embedders may drive the state from plain threads; the event stays visible in /_sandbox/events.
            logger.warning("webhook %s not delivered: no running event loop", event_id)
            return
        task = loop.create_task(self._deliver(event_id), name=f"webhook-{event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_all(self) -> None:
        """Drop pending deliveries (used by reset, so stale events never reach the receiver)."""
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP client."""
        self.cancel_all()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self, event_id: str) -> None:
        for attempt in range(1, self._config.max_attempts + 1):
            if await self._attempt(event_id, attempt):
                return
            if attempt < self._config.max_attempts:
                await asyncio.sleep(self._config.retry_base_delay * 2 ** (attempt - 1))
        logger.warning("webhook %s gave up after %d attempts", event_id, self._config.max_attempts)

    async def _attempt(self, event_id: str, attempt: int) -> bool:
        with self._state.lock:
            record = self._state.events.get(event_id)
        url = self._config.webhook_url
        if record is None or url is None:
            # Reset removed the event, or no endpoint is configured: nothing to deliver.
            return True
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": _USER_AGENT,
            "Stripe-Signature": sign_payload(record.body, self._config.webhook_secret, int(time.time())),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            response = await self._http().post(url, content=record.body.encode("utf-8"), headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = int((time.monotonic() - started) * 1000)
        with self._state.lock:
            record.deliveries.append(DeliveryAttempt(attempt, time.time(), url, status, error, elapsed))
        logger.info(
            "webhook %s %s attempt=%d -> %s (%d ms)",
            record.payload["type"],
            event_id,
            attempt,
            status if status is not None else error,
            elapsed,
        )
        return status is not None and 200 <= status < 300

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._config.delivery_timeout)
        return self._client
