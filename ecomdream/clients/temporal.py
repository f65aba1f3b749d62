"""The Temporal client every process uses: same address, namespace and data converter everywhere."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import RateLimit
from temporalio.api.workflowservice.v1 import UpdateTaskQueueConfigRequest
from temporalio.client import Client, Schedule, ScheduleAlreadyRunningError, ScheduleUpdate
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from ecomdream.codec.encryption import codec_from_settings
from ecomdream.config import Settings

log = logging.getLogger("ecomdream.temporal")


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic data converter, with the payload codec when there is one (clients, workers, replayers)."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


async def connect_temporal(
    address: str,
    namespace: str,
    codec: PayloadCodec | None,
    *,
    api_key: str | None = None,
    tls: bool | TLSConfig = False,
    lazy: bool = False,
    runtime: Runtime | None = None,
) -> Client:
    """Connect with the pydantic data converter and the payload codec (API, worker and tests share them)."""
    return await Client.connect(
        address,
        namespace=namespace,
        api_key=api_key,
        tls=tls or bool(api_key),
        data_converter=data_converter(codec),
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
    """The service's own connection: address, namespace, API key or mTLS, payload keys, all from settings."""
    codec = codec_from_settings(settings)
    if codec is None:
        log.warning("no payload keys configured: workflow payloads reach Temporal unencrypted")
    return await connect_temporal(
        settings.temporal_address,
        settings.temporal_namespace,
        codec,
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        tls=tls_from_settings(settings),
        lazy=lazy,
        runtime=runtime,
    )


async def limit_task_queue(client: Client, task_queue: str, per_second: float, reason: str) -> None:
    """Set the server-side rate of activities on a queue: it holds for every worker together.

    Unlike the worker option `max_task_queue_activities_per_second`, which the last worker to poll sets
    for everyone, this is one value for the queue (`temporal task-queue config get` shows it).
    """
    await client.workflow_service.update_task_queue_config(
        UpdateTaskQueueConfigRequest(
            namespace=client.namespace,
            identity=client.identity,
            task_queue=task_queue,
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            update_queue_rate_limit=UpdateTaskQueueConfigRequest.RateLimitUpdate(
                rate_limit=RateLimit(requests_per_second=per_second),
                reason=reason,
            ),
        )
    )


async def ensure_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create the schedule, or bring an existing one up to date (every worker does this at start)."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(schedule_id).update(lambda _: ScheduleUpdate(schedule=schedule))
