"""What the workflow histories of the journeys bench show: Temporal actions per journey, and per stage where
the time went (waiting for a worker, running in it, outside Temporal).

Actions are counted the way Temporal Cloud bills them, from the events of every run of the journey and of
its prompt's child workflow (`ACTION_RULE`). The stage breakdown takes the bench's own clock for the stage
(client side, same machine) and attributes each history interval that begins inside the stage to it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory

from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE

ACTION_RULE = """\
Temporal actions, counted from the histories as Temporal Cloud bills them: 1 per run started (the journey,
  each continue-as-new run, each child workflow), per activity scheduled and per activity retry (attempt - 1
  of its last start), per workflow task that ran local activities, per timer, signal received or sent,
  update accepted, search-attribute upsert, memo change and external cancel. Not in the histories and not
  counted: queries (the API asks one before reading an upload), rejected updates and heartbeats."""

LOCAL_ACTIVITY_MARKER = "core_local_activity"
ONE_ACTION = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "runs started",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "signals",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search-attribute upserts",
    EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED: "memo changes",
    EventType.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "external cancels",
}
ACTIVITY_ENDS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}
WORKFLOW_TASK_ENDS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: "workflow_task_completed_event_attributes",
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED: "workflow_task_failed_event_attributes",
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT: "workflow_task_timed_out_event_attributes",
}

# Where time inside a stage can go, in the order the breakdown shows them.
PARTS = (
    "workflow task waits",
    "workflow task runs",
    "activity waits (main queue)",
    "activity waits (Replicate queues)",
    "activity runs",
)
RATE_LIMITED = {REPLICATE_PREDICT_TASK_QUEUE, REPLICATE_OTHER_TASK_QUEUE}


@dataclass(frozen=True)
class Interval:
    """A stretch of a workflow's life, in wall-clock seconds."""

    part: str
    start: float
    end: float


@dataclass
class JourneyHistory:
    """Every run of one journey and its prompt: the actions they cost and their timed intervals."""

    actions: Counter[str] = field(default_factory=Counter)
    intervals: list[Interval] = field(default_factory=list)
    workflow_tasks: list[float] = field(default_factory=list)

    def add(self, history: WorkflowHistory) -> None:
        """Count and time one run's events."""
        events = list(history.events)
        self.actions.update(count_actions(events))
        found = list(intervals(events))
        self.intervals.extend(found)
        self.workflow_tasks.extend(i.start for i in found if i.part == "workflow task waits")

    def in_window(self, start: float, end: float) -> dict[str, float]:
        """Seconds per part of the intervals that begin in [start, end), each cut off at end."""
        out = dict.fromkeys(PARTS, 0.0)
        for interval in self.intervals:
            if start <= interval.start < end:
                out[interval.part] += max(min(interval.end, end) - interval.start, 0.0)
        return out

    def tasks_in(self, start: float, end: float) -> int:
        """Workflow tasks scheduled in [start, end)."""
        return sum(start <= at < end for at in self.workflow_tasks)


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e9


def count_actions(events: Sequence[HistoryEvent]) -> Counter[str]:
    """Billable actions of one run (see `ACTION_RULE`)."""
    counted: Counter[str] = Counter()
    local_tasks: set[int] = set()
    for event in events:
        kind = ONE_ACTION.get(event.event_type)
        if kind is not None:
            counted[kind] += 1
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            retries = event.activity_task_started_event_attributes.attempt - 1
            if retries > 0:
                counted["activity retries"] += retries
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == LOCAL_ACTIVITY_MARKER:
                local_tasks.add(marker.workflow_task_completed_event_id)
    if local_tasks:
        counted["workflow tasks with local activities"] += len(local_tasks)
    return counted


def intervals(events: Sequence[HistoryEvent]) -> Iterable[Interval]:
    """Workflow tasks (waiting, running) and activities (waiting, by queue, running) of one run."""
    by_id = {event.event_id: event for event in events}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            scheduled = by_id[event.workflow_task_started_event_attributes.scheduled_event_id]
            yield Interval("workflow task waits", _seconds(scheduled), _seconds(event))
        elif event.event_type in WORKFLOW_TASK_ENDS:
            started_id = getattr(event, WORKFLOW_TASK_ENDS[event.event_type]).started_event_id
            yield Interval("workflow task runs", _seconds(by_id[started_id]), _seconds(event))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled = by_id[event.activity_task_started_event_attributes.scheduled_event_id]
            queue = scheduled.activity_task_scheduled_event_attributes.task_queue.name
            part = (
                "activity waits (Replicate queues)"
                if queue in RATE_LIMITED
                else "activity waits (main queue)"
            )
            yield Interval(part, _seconds(scheduled), _seconds(event))
        elif event.event_type in ACTIVITY_ENDS:
            started_id = getattr(event, ACTIVITY_ENDS[event.event_type]).started_event_id
            if started_id in by_id:
                yield Interval("activity runs", _seconds(by_id[started_id]), _seconds(event))


async def _runs(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """The histories of every run of a workflow id."""
    histories = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        histories.append(await handle.fetch_history())
    return histories


async def journey_histories(
    client: Client, workflow_ids: Sequence[Sequence[str]], concurrency: int = 8
) -> list[JourneyHistory]:
    """For each journey (its workflow ids: the journey's and its prompt's), every run's history."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ids: Sequence[str]) -> JourneyHistory:
        found = JourneyHistory()
        for workflow_id in ids:
            async with gate:
                for history in await _runs(client, workflow_id):
                    found.add(history)
        return found

    return list(await asyncio.gather(*(one(ids) for ids in workflow_ids)))


def actions_line(histories: Sequence[JourneyHistory]) -> str:
    """Actions per journey, in all and by kind."""
    total: Counter[str] = Counter()
    for history in histories:
        total.update(history.actions)
    count = max(len(histories), 1)
    kinds = ", ".join(f"{kind} {n / count:.1f}" for kind, n in total.most_common())
    return f"Temporal actions per journey: {sum(total.values()) / count:.1f} ({kinds})"


Windows = dict[str, tuple[float, float]]

BREAKDOWN_NOTE = """\
Where each stage's time went (mean ms per journey, from the histories of the journey's runs and its prompt):
  workflow task waits = scheduled -> picked up by a worker (worker slots, pollers, server dispatch);
  workflow task runs = picked up -> completed (the worker's code, local activities, the completion RPC);
  activity waits = scheduled -> started (the Replicate queues wait for their rate budget); activity runs =
  started -> ended; outside Temporal = the rest (HTTP, webhook delivery, the API, the bench noticing the
  end). Intervals are attributed to the stage they begin in; work running side by side can add up to more."""


def breakdown_rows(
    stages: Sequence[str],
    journeys: Sequence[tuple[Windows, JourneyHistory]],
    fmt_ms: Callable[[float], str],
) -> list[list[str]]:
    """One row per stage: its mean, the mean of each part, outside Temporal, and workflow tasks."""
    rows = []
    count = max(len(journeys), 1)
    for stage in stages:
        totals = dict.fromkeys(PARTS, 0.0)
        whole = 0.0
        tasks = 0
        for windows, history in journeys:
            start, end = windows[stage]
            whole += end - start
            tasks += history.tasks_in(start, end)
            for part, seconds in history.in_window(start, end).items():
                totals[part] += seconds
        inside = sum(totals.values())
        cells = [stage, fmt_ms(whole / count)]
        cells += [fmt_ms(totals[part] / count) for part in PARTS]
        cells += [fmt_ms((whole - inside) / count), f"{tasks / count:.1f}"]
        rows.append(cells)
    return rows


BREAKDOWN_HEADERS = [
    "stage",
    "mean ms",
    "wf task waits",
    "wf task runs",
    "act waits main",
    "act waits Replicate",
    "act runs",
    "outside Temporal",
    "wf tasks",
]
