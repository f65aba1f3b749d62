"""Webhook delivery of the Replicate sandbox: Standard Webhooks signatures, ordered per job, retried with backoff."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx

from ecomdream.sandbox.replicate_state import JSON, Job, JobKind, Store, now_iso

log = logging.getLogger("ecomdream.sandbox.replicate")

# Replicate throttles these two events to at most one per 500 ms per job; start/completed always go out.
THROTTLED_EVENTS = frozenset({"output", "logs"})
THROTTLE_SECONDS = 0.5
DeliveryState = Literal["pending", "delivered", "failed", "dropped"]


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (ValueError when the secret has another shape)."""
    prefix, _, encoded = secret.partition("_")
    if prefix != "whsec" or not encoded:
        raise ValueError("webhook secret must look like whsec_<base64>")
    return base64.b64decode(encoded, validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class Delivery:
    """One webhook message; every attempt reuses its id, as receivers deduplicate on it."""

    id: str
    url: str
    event: str
    kind: JobKind
    object_id: str
    body: bytes
    created_at: str = field(default_factory=now_iso)
    state: DeliveryState = "pending"
    attempts: list[JSON] = field(default_factory=list)

    def describe(self) -> JSON:
        """The record `GET /_sandbox/webhooks` shows."""
        payload = json.loads(self.body)
        return {
            "id": self.id,
            "url": self.url,
            "event": self.event,
            "object": self.kind,
            "object_id": self.object_id,
            "object_status": payload.get("status"),
            "state": self.state,
            "attempts": list(self.attempts),
            "created_at": self.created_at,
            "body": payload,
        }


class WebhookDispatcher:
    """Queues events per job and delivers them in order in the background, never blocking API responses."""

    def __init__(self, store: Store, secret: str) -> None:
        signing_key(secret)  # fail at start-up, not at the first delivery
        self.store = store
        self.deliveries: list[Delivery] = []
        self._queues: dict[str, collections.deque[Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    def emit(self, job: Job, event: str) -> None:
        """Queue the job's current object for every target that subscribed to `event`."""
        targets = [t for t in job.targets if event in t.events]
        if not targets:
            return
        if event in THROTTLED_EVENTS:
            now = time.monotonic()
            if now - job.last_event_at.get(event, float("-inf")) < THROTTLE_SECONDS:
                return
            job.last_event_at[event] = now
        body = json.dumps(self.store.snapshot(job)).encode()
        drop = self.store.knobs.drop_webhooks
        for target in targets:
            delivery = Delivery(
                id=f"msg_{secrets.token_hex(12)}",
                url=target.url,
                event=event,
                kind=job.kind,
                object_id=job.id,
                body=body,
                state="dropped" if drop else "pending",
            )
            with self.store.lock:
                self.deliveries.append(delivery)
            if not drop:
                self._enqueue(job.id, delivery)

    def describe(self) -> list[JSON]:
        """Every delivery so far, oldest first."""
        with self.store.lock:
            return [d.describe() for d in self.deliveries]

    def _enqueue(self, job_id: str, delivery: Delivery) -> None:
        self._queues.setdefault(job_id, collections.deque()).append(delivery)
        if job_id not in self._workers:
            self._workers[job_id] = asyncio.create_task(self._drain(job_id))

    async def _drain(self, job_id: str) -> None:
        # One worker per job keeps that job's events in order; it ends when its queue is empty.
        queue = self._queues[job_id]
        try:
            while queue:
                await self._deliver(queue.popleft())
        finally:
            self._workers.pop(job_id, None)
            if not queue:
                self._queues.pop(job_id, None)

    async def _deliver(self, delivery: Delivery) -> None:
        knobs = self.store.knobs
        for attempt in range(1, knobs.webhook_max_attempts + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "Replicate-Webhooks/sandbox",
                "webhook-id": delivery.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.store.webhook_secret, delivery.id, timestamp, delivery.body),
            }
            status: int | None = None
            error: str | None = None
            try:
                response = await self._http().post(delivery.url, content=delivery.body, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self.store.lock:
                delivery.attempts.append({"at": now_iso(), "status_code": status, "error": error})
            if status is not None and 200 <= status < 300:
                delivery.state = "delivered"
                return
            log.warning(
                "webhook %s to %s attempt %d failed: %s", delivery.id, delivery.url, attempt, status or error
            )
            if attempt < knobs.webhook_max_attempts:
                await asyncio.sleep(knobs.webhook_retry_base_seconds * 2 ** (attempt - 1))
        delivery.state = "failed"

    def _http(self) -> httpx.AsyncClient:
        # Replicate does not follow redirects for webhooks.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        return self._client

    async def reset(self) -> None:
        """Stop pending deliveries and forget the history."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._queues.clear()
        with self.store.lock:
            self.deliveries.clear()

    async def aclose(self) -> None:
        """Stop deliveries and close the HTTP client."""
        await self.reset()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
