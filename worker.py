"""The worker: the one place where workflows, activities and clients meet."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from datetime import timedelta

from temporalio.worker import Worker

from activities import build_activities
from ecomdream.clients.temporal import connect_temporal
from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_TASK_QUEUE
from workflows import WORKFLOWS

log = logging.getLogger("ecomdream.worker")

# How long in-flight activities get to finish after SIGTERM before the worker exits anyway.
GRACEFUL_SHUTDOWN = timedelta(seconds=20)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Poll both task queues until stop is set, then finish in-flight tasks and exit."""
    client = await connect_temporal(
        settings.temporal_address,
        settings.temporal_namespace,
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        tls=settings.temporal_tls,
    )
    async with AsyncExitStack() as stack:
        activities = await build_activities(settings, stack)
        main = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=WORKFLOWS,
            activities=activities.main,
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        )
        # Server-side limit for the whole queue: every worker together stays under Replicate's rate limit.
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
