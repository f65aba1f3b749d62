"""POSTs signed events to API clients (Standard Webhooks), to the one address that was checked.

The host is resolved and checked once per delivery (`ecomdream.callbacks.addresses.resolve`) and the request
goes to that IP address with the name in the `Host` header and in TLS (SNI and certificate check): a DNS
answer that changes between the check and the connection (rebinding) cannot steer it elsewhere. No redirect
is followed, no proxy from the environment is used, and no connection is kept for another delivery.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from math import floor

import httpx
from standardwebhooks import Webhook

from ecomdream.callbacks.addresses import CallbackPolicy, resolve
from ecomdream.config import Settings

USER_AGENT = "ecomdream-callbacks/1"
# What one attempt may take; the activity's own timeout is longer, so a slow receiver is recorded as such.
TIMEOUT = httpx.Timeout(15.0, connect=5.0)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's answer: the receiver's status code."""

    status_code: int
    timestamp: int


def signed_headers(secret: str, event_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: a stable id, the attempt's timestamp, and the signature over both."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, body),
    }


class CallbackSender:
    """Sends one signed POST per attempt; raises `CallbackRefused` or httpx errors when it cannot."""

    def __init__(self, http: httpx.AsyncClient, policy: CallbackPolicy) -> None:
        self.http = http
        self.policy = policy

    async def post(self, url: str, event_id: str, body: str, secret: str) -> Attempt:
        """Check and resolve url, then POST body to the checked address, signed with a fresh timestamp."""
        target = await resolve(url, self.policy)
        at = datetime.now(UTC)
        pinned = httpx.URL(target.url.geturl()).copy_with(host=str(target.address))
        headers = {
            "Host": _host_header(target.url.scheme, target.host, target.port),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signed_headers(secret, event_id, body, at),
        }
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        request = self.http.build_request("POST", pinned, content=body.encode(), headers=headers)
        request.extensions.update(extensions)
        response = await self.http.send(request, follow_redirects=False, stream=True)
        await response.aclose()  # the body is not needed: the status says it all
        return Attempt(status_code=response.status_code, timestamp=floor(at.timestamp()))


def _host_header(scheme: str, host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == {"http": 80, "https": 443}[scheme] else f"{name}:{port}"


def create_callback_sender(settings: Settings, stack: AsyncExitStack) -> CallbackSender:
    """A sender for the configured mode; its connections close with stack."""
    http = httpx.AsyncClient(
        timeout=TIMEOUT,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    stack.push_async_callback(http.aclose)
    return CallbackSender(http, CallbackPolicy.from_settings(settings))
