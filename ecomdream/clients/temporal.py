"""The Temporal client every process uses: same address, namespace and data converter everywhere."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime


async def connect_temporal(
    address: str,
    namespace: str,
    *,
    api_key: str | None = None,
    tls: bool = False,
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
