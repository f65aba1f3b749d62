"""Downloads of Replicate's generated files: from Replicate's delivery hosts only (the sandbox's own address in
sandbox mode), streamed up to a byte cap, with our token sent to those hosts only and never across a redirect."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from ecomdream.config import Settings, is_replicate_address

MAX_REDIRECTS = 3
DEFAULT_PORTS = {"http": 80, "https": 443}


class OutputRefused(Exception):
    """A generated file that will not be downloaded, whatever the retries (the message is for the log)."""


class ForeignOutput(OutputRefused):
    """The file (or a redirect on its way) is somewhere other than Replicate's delivery hosts."""


class OutputTooLarge(OutputRefused):
    """The file is larger than the cap."""


class OutputGone(OutputRefused):
    """The file is no longer there (Replicate deletes outputs after an hour)."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme)


@dataclass(frozen=True)
class DeliveryOrigins:
    """Where generated files may come from: https hosts (`*.host` for its subdomains) and exact origins."""

    https_hosts: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryOrigins:
        """The sandbox's own address when the API base is a sandbox, Replicate's delivery hosts otherwise."""
        base = settings.replicate_api_base
        if base and not is_replicate_address(base):
            return cls(origins=(base,))
        hosts = (host.strip().lower() for host in settings.replicate_output_hosts.split(","))
        return cls(https_hosts=tuple(host for host in hosts if host))

    def allows(self, url: httpx.URL) -> bool:
        """Whether url is on an allowed host (https and its default port) or at an allowed origin."""
        if any(_origin(url) == _origin(httpx.URL(origin)) for origin in self.origins):
            return True
        if url.scheme != "https" or url.port is not None:
            return False
        return any(
            url.host == pattern or (pattern.startswith("*.") and url.host.endswith(pattern[1:]))
            for pattern in self.https_hosts
        )


class Deliveries:
    """Fetches generated files into memory, refusing foreign places and anything above `max_bytes`."""

    def __init__(self, http: httpx.AsyncClient, origins: DeliveryOrigins, token: str, max_bytes: int) -> None:
        self.http = http
        self.origins = origins
        self.auth = {"Authorization": f"Bearer {token}"}
        self.max_bytes = max_bytes

    async def fetch(self, url: str) -> bytes:
        """The file's bytes; OutputRefused subclasses for what no retry fixes, httpx errors for the rest."""
        target, headers = httpx.URL(url), self.auth
        for _ in range(MAX_REDIRECTS + 1):
            if not self.origins.allows(target):
                raise ForeignOutput(f"{target.scheme}://{target.netloc.decode()} is not a delivery host")
            async with self.http.stream("GET", target, headers=headers, follow_redirects=False) as response:
                if not response.is_redirect:
                    return await self._read(response)
                # Followed by hand: each hop is checked like the first, and the token stays behind.
                target, headers = response.url.join(response.headers.get("location", "")), {}
        raise ForeignOutput(f"more than {MAX_REDIRECTS} redirects")

    async def _read(self, response: httpx.Response) -> bytes:
        if response.status_code in (404, 410):
            raise OutputGone(f"HTTP {response.status_code}")
        response.raise_for_status()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise OutputTooLarge(f"{declared} bytes announced")
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > self.max_bytes:
                raise OutputTooLarge(f"more than {self.max_bytes} bytes")
        return bytes(data)


def create_deliveries(settings: Settings, max_bytes: int, stack: AsyncExitStack) -> Deliveries:
    """Deliveries with the Replicate token in use; the connections close with stack."""
    # No default headers and no automatic redirects: `fetch` decides where the token goes.
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
    stack.push_async_callback(http.aclose)
    return Deliveries(http, DeliveryOrigins.from_settings(settings), settings.replicate_token(), max_bytes)
