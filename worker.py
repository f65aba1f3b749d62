"""The worker: the one place where workflows, activities and clients meet."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from datetime import timedelta

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities import build_activities
from ecomdream.clients.temporal import connect_from_settings
from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_TASK_QUEUE
from workflows import WORKFLOWS
from workflows.metrics import start_at_zero

log = logging.getLogger("ecomdream.worker")

# How long in-flight activities get to finish after SIGTERM before the worker exits anyway.
GRACEFUL_SHUTDOWN = timedelta(seconds=20)
TRAINING_BUCKETS = [30.0, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200]


def metrics_runtime(settings: Settings) -> Runtime | None:
    """SDK and business metrics (emitted by workflows) on the worker's own Prometheus endpoint."""
    if not settings.worker_metrics_port:
        return None
    prometheus = PrometheusConfig(
        bind_address=f"{settings.metrics_host}:{settings.worker_metrics_port}",
        counters_total_suffix=True,
        durations_as_seconds=True,
        histogram_bucket_overrides={"ecomdream_training_duration_seconds": TRAINING_BUCKETS},
    )
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Poll both task queues until stop is set, then finish in-flight tasks and exit."""
    runtime = metrics_runtime(settings)
    client = await connect_from_settings(settings, runtime=runtime)
    if runtime is not None:
        start_at_zero(runtime.metric_meter, settings.temporal_namespace, settings.temporal_task_queue)
    async with AsyncExitStack() as stack:
        activities = await build_activities(settings, stack)
        main = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=WORKFLOWS,
            activities=activities.main,
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        )
        # Server-side limit for the whole queue (every worker together), on top of each worker's paced
        # HTTP client (activities make one to three calls each, and the SDK retries some of them).
        replicate = Worker(
            client,
            task_queue=REPLICATE_TASK_QUEUE,
            activities=activities.replicate,
            max_task_queue_activities_per_second=settings.replicate_requests_per_second,
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        )
        async with main, replicate:
            log.info("worker polling %s and %s", settings.temporal_task_queue, REPLICATE_TASK_QUEUE)
            await stop.wait()
            log.info("worker stopping")


def main() -> None:
    """Run the worker until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(Settings(), stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
