"""The worker: the one place where workflows, activities and clients meet."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Protocol

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities import build_activities
from ecomdream.clients.replicate import CREATES_PER_SECOND, OTHER_CALLS_PER_CREATE, OTHERS_PER_SECOND
from ecomdream.clients.smtp import SmtpServer
from ecomdream.clients.temporal import connect_from_settings, limit_task_queue
from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_CREATE_TASK_QUEUE, REPLICATE_READ_TASK_QUEUE
from workflows import WORKFLOWS
from workflows.metrics import start_at_zero

log = logging.getLogger("ecomdream.worker")

# How long in-flight activities get to finish after SIGTERM before the worker exits anyway. The process's
# workers shut down together (`serve`), so the whole process needs this once: within compose's
# stop_grace_period (30 s), with room to close the clients after it.
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


def replicate_budgets(settings: Settings) -> dict[str, float]:
    """Activities per second on each Replicate queue, for all workers together.

    Creates get their share of Replicate's create limit. Every other call shares the other limit with
    the calls a create makes besides (`OTHER_CALLS_PER_CREATE`), so at a share of 1 both are just full.
    """
    share = settings.replicate_rate_share
    others = OTHERS_PER_SECOND - OTHER_CALLS_PER_CREATE * CREATES_PER_SECOND
    return {
        REPLICATE_CREATE_TASK_QUEUE: CREATES_PER_SECOND * share,
        REPLICATE_READ_TASK_QUEUE: others * share,
    }


class Runnable(Protocol):
    """What `serve` needs of a worker."""

    async def run(self) -> None: ...
    async def shutdown(self) -> None: ...


async def serve(workers: Sequence[Runnable], stop: asyncio.Event) -> None:
    """Run the workers until stop is set (or one fails), then shut them all down at once.

    Concurrently, so that the whole process takes one graceful period, not one per worker.
    """
    runs = [asyncio.ensure_future(worker.run()) for worker in workers]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stopping, *runs], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    log.info("worker stopping")
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*runs)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Poll the main and the Replicate task queues until stop is set, then finish in-flight tasks and exit."""
    runtime = metrics_runtime(settings)
    client = await connect_from_settings(settings, runtime=runtime)
    if runtime is not None:
        start_at_zero(runtime.metric_meter, settings.temporal_namespace, settings.temporal_task_queue)
    async with AsyncExitStack() as stack:
        activities = await build_activities(settings, stack)
        budgets = replicate_budgets(settings)
        for task_queue, per_second in budgets.items():
            reason = "ECOMDREAM_REPLICATE_RATE_SHARE of Replicate's limits (set by every worker at start)"
            await limit_task_queue(client, task_queue, per_second, reason)
        workers = [
            Worker(
                client,
                task_queue=settings.temporal_task_queue,
                workflows=WORKFLOWS,
                activities=activities.main,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            ),
            Worker(
                client,
                task_queue=REPLICATE_CREATE_TASK_QUEUE,
                activities=activities.replicate_create,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            ),
            Worker(
                client,
                task_queue=REPLICATE_READ_TASK_QUEUE,
                activities=activities.replicate_read,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            ),
        ]
        limits = ", ".join(f"{queue} ({rate:g}/s)" for queue, rate in budgets.items())
        smtp = SmtpServer.from_settings(settings)
        log.info(
            "customer e-mail %s",
            f"via {smtp.host}:{smtp.port}" if smtp else "is off (ECOMDREAM_SMTP_HOST unset)",
        )
        log.info("worker polling %s and %s", settings.temporal_task_queue, limits)
        await serve(workers, stop)


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
