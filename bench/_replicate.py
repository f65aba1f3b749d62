"""The Replicate side of the journeys bench: extra worker processes, and what the sandbox saw of them.

Calls per training and per prediction, the busiest second against each budget, and how long after a job
ended at the sandbox the customer saw it (with webhooks dropped: how late a lost webhook was noticed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import httpx

from ecomdream.clients.replicate import CALLS_PER_OTHER_ACTIVITY
from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE
from ecomdream.devstack.processes import ManagedProcess
from ecomdream.devstack.stack import Stack
from tests.fixtures.replicate_calls import PREDICTION_CREATES, Calls, about, busiest_second, replicate_calls
from worker import replicate_budgets

WORKER_READY_LINE = b"worker polling"
WORKER_READY_TIMEOUT_S = 60.0
FAST_STOP_S = 3.0
# Temporal's queue limiter lets about one second's worth through at once: a single second may see up to
# twice the rate, a longer window holds it.
BURST_WINDOW_S = 10.0


def _polling(worker: ManagedProcess) -> bool:
    return worker.log_path.exists() and WORKER_READY_LINE in worker.log_path.read_bytes()


@contextlib.contextmanager
def extra_workers(stack: Stack, count: int) -> Iterator[list[ManagedProcess]]:
    """`count` more worker processes with the stack worker's environment (no metrics port of their own)."""
    env = dict(stack.worker.env or {}) | {"ECOMDREAM_WORKER_METRICS_PORT": "0"}
    workers = [
        ManagedProcess.in_data_dir(
            f"worker-{n}", stack.worker.argv, stack.data_dir, env=env, cwd=stack.worker.cwd
        )
        for n in range(2, count + 2)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready(partial(_polling, worker), timeout=WORKER_READY_TIMEOUT_S)
        yield workers
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.stop(timeout=FAST_STOP_S)


async def sandbox_jobs(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every training and prediction the sandbox received (request and current object)."""
    async with httpx.AsyncClient(base_url=stack.replicate_url, timeout=30) as client:
        trainings = (await client.get("/_sandbox/trainings")).json()["results"]
        predictions = (await client.get("/_sandbox/predictions")).json()["results"]
    return trainings, predictions


def _completed(job: dict[str, Any]) -> float | None:
    stamp = job["object"].get("completed_at")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def seen_late(jobs: Sequence[dict[str, Any]], seen: dict[str, float], key: Any) -> list[float]:
    """Seconds from each job's end at the sandbox until the customer saw it (`seen`: wall clock, by key)."""
    out = []
    for job in jobs:
        end = _completed(job)
        name = key(job)
        if end is not None and name in seen:
            out.append(seen[name] - end)
    return out


@dataclass
class Budget:
    """The calls a kind of traffic may make per second, for all workers together."""

    what: str
    per_second: float
    predictions: bool  # prediction creates, or every other call


def budgets(settings: Settings) -> list[Budget]:
    """Prediction creates against their budget; every other call against the other limit's share."""
    rates = replicate_budgets(settings)
    others = rates[REPLICATE_OTHER_TASK_QUEUE] * CALLS_PER_OTHER_ACTIVITY
    return [
        Budget("prediction creates", rates[REPLICATE_PREDICT_TASK_QUEUE], predictions=True),
        Budget("other calls", others, predictions=False),
    ]


def rate_lines(calls: Calls, settings: Settings) -> list[str]:
    """The busiest second of each budget's calls during the run, and the budget."""
    lines = []
    for budget in budgets(settings):
        stamps = [
            t for e, times in calls.items() if (e in PREDICTION_CREATES) is budget.predictions for t in times
        ]
        second, _ = busiest_second(stamps)
        ten, _ = busiest_second(stamps, BURST_WINDOW_S)
        lines.append(
            f"  {budget.what} (budget {budget.per_second:g}/s): busiest second {second} calls, busiest "
            f"{BURST_WINDOW_S:g} s {ten / BURST_WINDOW_S:.1f}/s ({len(stamps)} in all)"
        )
    return lines


def calls_line(calls: Calls, trainings: int, predictions: int) -> str:
    """Replicate API calls per training and per prediction, from the sandbox's request log."""
    per_training = about(calls, "training") / max(trainings, 1)
    per_prediction = about(calls, "prediction") / max(predictions, 1)
    polls = sum(len(t) for e, t in calls.items() if e.startswith("GET ") and "{" in e)
    return (
        f"Replicate calls per training {per_training:.2f}, per prediction {per_prediction:.2f} "
        f"({trainings} trainings, {predictions} predictions, {polls} polls in all)"
    )


async def run_calls(stack: Stack, since: float) -> Calls:
    """The workers' calls since the run started."""
    return await replicate_calls(stack.replicate_url, since, time.time())
