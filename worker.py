"""The worker: the one place where workflows, activities and clients meet."""

from __future__ import annotations

import asyncio
import compileall
import logging
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

import workflows
from activities import build_activities
from ecomdream.clients.replicate import CALLS_PER_OTHER_ACTIVITY, CREATES_PER_SECOND, OTHERS_PER_SECOND
from ecomdream.clients.smtp import SmtpServer
from ecomdream.clients.temporal import connect_from_settings, ensure_schedule, limit_task_queue
from ecomdream.config import Settings
from ecomdream.contracts import (
    REPLICATE_OTHER_TASK_QUEUE,
    REPLICATE_PREDICT_TASK_QUEUE,
    RETENTION_SCHEDULE_ID,
)
from ecomdream.contracts.deletion import RetentionInput
from workflows import WORKFLOWS, RetentionWorkflow
from workflows.metrics import start_at_zero

log = logging.getLogger("ecomdream.worker")

# How long in-flight activities get to finish after SIGTERM before the worker exits anyway. The process's
# workers shut down together (`serve`), so the whole process needs this once: within compose's
# stop_grace_period (30 s), with room to close the clients after it.
GRACEFUL_SHUTDOWN = timedelta(seconds=20)
# The retention run: daily at 03:00 UTC; a run still going when the next is due makes that one skip.
RETENTION_EVERY = timedelta(days=1)
RETENTION_AT = timedelta(hours=3)
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

    Prediction creates get their share of Replicate's "create prediction" limit; every other activity
    (a training's creation makes two calls, a poll or cancel one) gets its share of the other limit, counted
    at two calls each, so at a share of 1 neither limit can be passed.
    """
    share = settings.replicate_rate_share
    return {
        REPLICATE_PREDICT_TASK_QUEUE: CREATES_PER_SECOND * share,
        REPLICATE_OTHER_TASK_QUEUE: OTHERS_PER_SECOND / CALLS_PER_OTHER_ACTIVITY * share,
    }


def compile_workflows() -> None:
    """Write the bytecode of the workflow modules, which the sandbox imports afresh for every new run.

    Each journey, each of its continue-as-new runs and each prompt is a new run. Without bytecode on disk
    (PYTHONDONTWRITEBYTECODE, a fresh checkout) every one of those imports compiles the source again:
    replaying a one-task history cost 120 ms of CPU instead of 45 ms. The image compiles at build time; a
    directory we may not write to is left as it is.
    """
    compileall.compile_dir(Path(workflows.__file__).parent, quiet=2)


def retention_schedule(settings: Settings) -> Schedule:
    """The daily RetentionWorkflow with the retention settings (set again by every worker at start)."""
    retention = RetentionInput(
        image_days=settings.image_retention_days, failed_upload_days=settings.failed_upload_retention_days
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RetentionWorkflow.run,
            retention,
            id=RETENTION_SCHEDULE_ID,
            task_queue=settings.temporal_task_queue,
            static_summary=(
                f"Retention: images after {retention.image_days} days, "
                f"failed uploads after {retention.failed_upload_days} days"
            ),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=RETENTION_EVERY, offset=RETENTION_AT)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


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
    compile_workflows()
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
        await ensure_schedule(client, RETENTION_SCHEDULE_ID, retention_schedule(settings))
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
                task_queue=REPLICATE_PREDICT_TASK_QUEUE,
                activities=activities.replicate_predict,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            ),
            Worker(
                client,
                task_queue=REPLICATE_OTHER_TASK_QUEUE,
                activities=activities.replicate_other,
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
