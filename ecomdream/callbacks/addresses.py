"""Where callbacks may go: http(s) URLs only; in live mode https to public internet addresses only.

A URL is checked when the customer sets it and again before every delivery, by resolving its host once and
connecting to exactly the address that was checked (see `ecomdream.clients.callbacks`): a name that later
resolves to one of our own networks (DNS rebinding) is refused then, not followed.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from urllib.parse import SplitResult, urlsplit

from ecomdream.config import ProviderMode, Settings
from ecomdream.errors import EcomdreamError

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
EXAMPLE = "https://example.com/hooks/ecomdream"
LOOKUP_SECONDS = 5

IPAddress = IPv4Address | IPv6Address


class CallbackRefused(EcomdreamError):
    """A callback URL we will not send events to; the message tells the customer why (no host named)."""

    status_code = 422


@dataclass(frozen=True)
class CallbackPolicy:
    """Live mode: https and public addresses only. Sandbox mode: any http(s) address (your own machine)."""

    live: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackPolicy:
        """Live when the providers are (real money, real customers)."""
        return cls(live=settings.provider_mode is ProviderMode.LIVE)


@dataclass(frozen=True)
class CallbackTarget:
    """A checked URL and the one address a delivery connects to."""

    url: SplitResult
    host: str
    port: int
    address: IPAddress


def parse_url(url: str, policy: CallbackPolicy) -> SplitResult:
    """The URL's parts, or `CallbackRefused` saying what is wrong with its shape."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise CallbackRefused(f"callback_url is not a URL; send one like {EXAMPLE}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise CallbackRefused(f"callback_url must be an http or https URL, like {EXAMPLE}")
    if policy.live and parts.scheme != "https":
        raise CallbackRefused("callback_url must use https, so that events cannot be read on the way")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must not contain a user name or password")
    return parts


def refusal(address: IPAddress, policy: CallbackPolicy) -> str | None:
    """Why events may not go to this address (None: they may)."""
    if not policy.live:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        return (
            "callback_url must point to a public internet address; its host is a private, loopback, "
            "link-local, multicast or reserved address"
        )
    return None


async def resolve(url: str, policy: CallbackPolicy) -> CallbackTarget:
    """Check the URL and resolve its host once; every address it has must be allowed."""
    parts = parse_url(url, policy)
    host = parts.hostname
    assert host is not None, "parse_url refuses URLs without a host"
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    try:
        addresses = [ip_address(host)]
    except ValueError:
        addresses = await _lookup(host, port)
    for address in addresses:
        reason = refusal(address, policy)
        if reason is not None:
            raise CallbackRefused(reason)
    return CallbackTarget(url=parts, host=host, port=port, address=addresses[0])


async def _lookup(host: str, port: int) -> list[IPAddress]:
    try:
        async with asyncio.timeout(LOOKUP_SECONDS):
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, TimeoutError):
        raise CallbackRefused("callback_url's host name could not be found (DNS)") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        # IPv6 socket addresses may carry a scope ("fe80::1%eth0"): the address is what is checked.
        address = ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise CallbackRefused("callback_url's host name could not be found (DNS)")
    return addresses
