"""Where generated images may be downloaded from, live and in sandbox mode."""

from __future__ import annotations

import httpx
import pytest

from ecomdream.clients.deliveries import DeliveryOrigins
from ecomdream.config import Settings


def allowed(origins: DeliveryOrigins, url: str) -> bool:
    """Whether a download from url would be attempted."""
    return origins.allows(httpx.URL(url))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://replicate.delivery/pbxt/abc/out-0.png", True),
        ("https://pbxt.replicate.delivery/abc/out-0.png", True),
        ("https://a.b.replicate.delivery/out-0.png", True),
        ("https://REPLICATE.delivery/out-0.png", True),
        ("http://replicate.delivery/out-0.png", False),
        ("https://replicate.delivery:8443/out-0.png", False),
        ("https://replicate.delivery.example.com/out-0.png", False),
        ("https://evilreplicate.delivery/out-0.png", False),
        ("https://replicate.com/out-0.png", False),
        ("http://127.0.0.1:12112/files/out-0.png", False),
    ],
)
def test_live_downloads_come_from_replicates_delivery_hosts_over_https(url: str, expected: bool) -> None:
    assert allowed(DeliveryOrigins.from_settings(Settings(_env_file=None)), url) is expected


def test_the_delivery_hosts_are_a_setting() -> None:
    origins = DeliveryOrigins.from_settings(
        Settings(_env_file=None, replicate_output_hosts=" files.example.com , *.cdn.example.com,")
    )
    assert origins.https_hosts == ("files.example.com", "*.cdn.example.com")
    assert allowed(origins, "https://files.example.com/a.png")
    assert allowed(origins, "https://eu.cdn.example.com/a.png")
    assert not allowed(origins, "https://cdn.example.com/a.png")
    assert not allowed(origins, "https://replicate.delivery/a.png")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:12112/files/out-0.png", True),
        ("http://127.0.0.1:12113/files/out-0.png", False),
        ("http://localhost:12112/files/out-0.png", False),
        ("https://127.0.0.1:12112/files/out-0.png", False),
        ("https://replicate.delivery/out-0.png", False),
    ],
)
def test_sandbox_downloads_come_from_the_sandbox_only(url: str, expected: bool) -> None:
    settings = Settings(_env_file=None, replicate_api_base="http://127.0.0.1:12112")
    assert allowed(DeliveryOrigins.from_settings(settings), url) is expected


def test_replicates_own_api_address_keeps_the_delivery_hosts() -> None:
    settings = Settings(_env_file=None, replicate_api_base="https://api.replicate.com")
    assert allowed(DeliveryOrigins.from_settings(settings), "https://replicate.delivery/out-0.png")
