"""The Temporal client every process uses: same address, namespace and data converter everywhere."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from ecomdream.config import Settings


async def connect_temporal(
    address: str,
    namespace: str,
    *,
    api_key: str | None = None,
    tls: bool | TLSConfig = False,
    lazy: bool = False,
    runtime: Runtime | None = None,
) -> Client:
    """Connect with the pydantic data converter (API, worker and tests share it)."""
    return await Client.connect(
        address,
        namespace=namespace,
        api_key=api_key,
        tls=tls or bool(api_key),
        data_converter=pydantic_data_converter,
        lazy=lazy,
        runtime=runtime,
    )


def tls_from_settings(settings: Settings) -> bool | TLSConfig:
    """mTLS when a client certificate is configured (Temporal Cloud), else plain TLS on or off."""
    if settings.temporal_tls_cert_path is None:
        return settings.temporal_tls
    if settings.temporal_tls_key_path is None:
        raise ValueError("ECOMDREAM_TEMPORAL_TLS_KEY_PATH is required with ECOMDREAM_TEMPORAL_TLS_CERT_PATH")
    ca: Path | None = settings.temporal_tls_ca_path
    return TLSConfig(
        client_cert=settings.temporal_tls_cert_path.read_bytes(),
        client_private_key=settings.temporal_tls_key_path.read_bytes(),
        server_root_ca_cert=ca.read_bytes() if ca else None,
    )


async def connect_from_settings(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """The service's own connection: address, namespace, API key or mTLS, all from settings."""
    return await connect_temporal(
        settings.temporal_address,
        settings.temporal_namespace,
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        tls=tls_from_settings(settings),
        lazy=lazy,
        runtime=runtime,
    )
