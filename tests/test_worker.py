"""The worker process: its Replicate budgets, and its workers shut down together (one graceful period)."""

from __future__ import annotations

import asyncio
import time

from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE
from worker import replicate_budgets, serve


class SlowToStop:
    """A worker whose graceful shutdown takes a while."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        await self.stopped.wait()

    async def shutdown(self) -> None:
        await asyncio.sleep(self.seconds)
        self.stopped.set()


async def test_the_workers_of_one_process_shut_down_together() -> None:
    workers = [SlowToStop(0.5) for _ in range(3)]
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(workers, stop))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(serving, 5)
    assert time.monotonic() - started < 0.9, "one graceful period for the process, not one per worker"


def test_the_budgets_stay_within_replicates_limits_at_any_share() -> None:
    full = replicate_budgets(Settings(replicate_rate_share=1.0))
    # 600 prediction creates a minute; 3,000 other calls a minute, at most two per other activity.
    assert full[REPLICATE_PREDICT_TASK_QUEUE] == 10
    assert full[REPLICATE_OTHER_TASK_QUEUE] * 2 == 50
    half = replicate_budgets(Settings(replicate_rate_share=0.5))
    assert half == {queue: rate / 2 for queue, rate in full.items()}
