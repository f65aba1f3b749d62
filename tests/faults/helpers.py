"""Fault-injection tools shared by the fault tests: restart, hold and watch parts of the stack."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowHistory

from ecomdream.config import SANDBOX_REPLICATE_TOKEN
from ecomdream.devstack.processes import ManagedProcess, http_ok
from ecomdream.devstack.stack import Stack
from tests.fixtures.stack import eventually

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
# The Replicate sandbox's output downloads (its `replicate.delivery`), as `/_sandbox/hold` names them.
DOWNLOAD = "GET /files/{name}"
WORKER_READY_LINE = "worker polling"


def _log_count(process: ManagedProcess, needle: str) -> int:
    try:
        return process.log_path.read_text(errors="replace").count(needle)
    except FileNotFoundError:
        return 0


async def start_worker(stack: Stack, *, within: float = 60) -> None:
    """Start the worker and wait until it polls both task queues (its log says so)."""
    before = _log_count(stack.worker, WORKER_READY_LINE)
    stack.worker.start()

    async def polling() -> int:
        if not stack.worker.running:
            raise AssertionError(f"the worker exited during start-up:\n{stack.worker.log_tail()}")
        return _log_count(stack.worker, WORKER_READY_LINE)

    await eventually(polling, lambda n: n > before, within=within, every=0.1)


async def restart_worker(stack: Stack) -> None:
    """SIGKILL the worker's process group (no graceful shutdown), then start a fresh worker."""
    stack.worker.kill()
    await start_worker(stack)


async def pending_activities(temporal: Client, workflow_id: str) -> list[PendingActivityInfo]:
    """The activities the workflow's latest run is waiting for."""
    described = await temporal.get_workflow_handle(workflow_id).describe()
    return list(described.raw_description.pending_activities)


async def pending_children(temporal: Client, workflow_id: str) -> list[str]:
    """Workflow ids of the running prompts of the journey's latest run."""
    described = await temporal.get_workflow_handle(workflow_id).describe()
    return [
        child.workflow_id
        for child in described.raw_description.pending_children
        if child.workflow_type_name == "PromptWorkflow"  # not the notices it announced
    ]


def find(activities: list[PendingActivityInfo], name: str) -> PendingActivityInfo | None:
    """The pending activity of that type, if any."""
    return next((a for a in activities if a.activity_type.name == name), None)


async def wait_activity(
    temporal: Client, workflow_id: str, name: str, *, started: bool = True, within: float = 60
) -> PendingActivityInfo:
    """Wait until the activity is pending (and, by default, running on a worker); polled every 20 ms."""

    async def probe() -> PendingActivityInfo | None:
        return find(await pending_activities(temporal, workflow_id), name)

    def ready(info: PendingActivityInfo | None) -> bool:
        return info is not None and (not started or info.state == STARTED)

    found = await eventually(probe, ready, within=within, every=0.02)
    assert found is not None
    return found


async def assert_still_running(temporal: Client, workflow_id: str, caught: PendingActivityInfo) -> None:
    """After the kill: the attempt that was running is still open, so the kill landed inside it."""
    now = find(await pending_activities(temporal, workflow_id), caught.activity_type.name)
    name = caught.activity_type.name
    assert now is not None, f"{name} of {workflow_id} completed before the worker was killed"
    assert now.state == STARTED, f"{name} of {workflow_id} was not running when the worker was killed"
    assert now.attempt == caught.attempt, f"{name} of {workflow_id} moved on to another attempt"


async def run_histories(temporal: Client, workflow_id: str) -> list[WorkflowHistory]:
    """The history of every run of a workflow, oldest first (a journey continues as new once its model is
    ready, so what happened before is in an earlier run)."""
    runs = sorted(
        [run async for run in temporal.list_workflows(f"WorkflowId = '{workflow_id}'")],
        key=lambda run: run.start_time,
    )
    return [
        await temporal.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history() for run in runs
    ]


async def started_attempts(temporal: Client, workflow_id: str, name: str) -> list[int]:
    """The attempt number recorded for every finished activity of that type, in every run of the workflow."""
    attempts: list[int] = []
    for history in await run_histories(temporal, workflow_id):
        scheduled: dict[int, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = event.activity_task_started_event_attributes
                if scheduled.get(attrs.scheduled_event_id) == name:
                    attempts.append(attrs.attempt)
    return attempts


async def api_ready(stack: Stack) -> bool:
    """Whether the API's /ready answers 200."""
    return await asyncio.to_thread(http_ok, f"{stack.api_url}/ready")


async def wait_ready(stack: Stack, within: float = 60) -> None:
    """Wait until the API says every dependency answers."""
    await eventually(lambda: api_ready(stack), bool, within=within, every=0.2)


async def sandbox_get(base_url: str, path: str) -> Any:
    """GET a sandbox control endpoint."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.get(path)
        response.raise_for_status()
        return response.json()


async def trainings_for(stack: Stack, version_id: str) -> list[dict[str, Any]]:
    """Trainings the Replicate sandbox received for one version (its zip key is in `input_images`)."""
    results: list[dict[str, Any]] = (await sandbox_get(stack.replicate_url, "/_sandbox/trainings"))["results"]
    return [t for t in results if version_id in str(t["request"]["input"].get("input_images", ""))]


async def predictions_for(stack: Stack, marker: str) -> list[dict[str, Any]]:
    """Predictions the Replicate sandbox received whose prompt contains marker."""
    results: list[dict[str, Any]] = (await sandbox_get(stack.replicate_url, "/_sandbox/predictions"))[
        "results"
    ]
    return [p for p in results if marker in str(p["request"]["input"].get("prompt", ""))]


async def images_recorded_twice(db: AsyncEngine) -> list[tuple[Any, ...]]:
    """(prompt_id, position, count) for every image position stored more than once."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT prompt_id, position, count(*) FROM images GROUP BY 1, 2 HAVING count(*) > 1")
        )
        return [tuple(row) for row in rows]


async def image_count(db: AsyncEngine, prompt_id: str) -> int:
    """Images stored for a prompt."""
    async with db.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM images WHERE prompt_id = :id"), {"id": prompt_id}
        )
    return int(count or 0)


class Deadline:
    """A budget for a multi-step scenario; `left()` is what the next wait may use."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, floor: float = 1.0) -> float:
        """Seconds left (never below floor, so a late step still gets one chance)."""
        return max(self.end - time.monotonic(), floor)


async def request_count(stack: Stack, endpoint: str) -> int:
    """How many calls the Replicate sandbox received on one endpoint (`METHOD /v1/route/{template}`)."""
    endpoints: dict[str, Any] = (await sandbox_get(stack.replicate_url, "/_sandbox/requests"))["endpoints"]
    return int(endpoints.get(endpoint, {}).get("count", 0))


@contextlib.asynccontextmanager
async def answers_held(stack: Stack, *endpoints: str) -> AsyncIterator[None]:
    """Replicate performs every call to these endpoints, but their answers wait until the block ends.

    A worker killed while a create is held dies after Replicate created the job and before it heard its id.
    """
    async with httpx.AsyncClient(base_url=stack.replicate_url, timeout=10) as sandbox:
        for endpoint in endpoints:
            (await sandbox.post("/_sandbox/hold", json={"endpoint": endpoint})).raise_for_status()
        try:
            yield
        finally:
            await release_answers(stack, *endpoints)


async def release_answers(stack: Stack, *endpoints: str) -> None:
    """Send the held answers of these endpoints and hold them no longer."""
    async with httpx.AsyncClient(base_url=stack.replicate_url, timeout=10) as sandbox:
        for endpoint in endpoints:
            (await sandbox.post("/_sandbox/release", json={"endpoint": endpoint})).raise_for_status()


async def wait_held(stack: Stack, *endpoints: str, within: float = 60) -> None:
    """Wait until every one of these endpoints has an answer held (its call was performed)."""

    async def waiting() -> dict[str, Any]:
        held: dict[str, Any] = (await sandbox_get(stack.replicate_url, "/_sandbox/holds"))["endpoints"]
        return held

    await eventually(
        waiting, lambda held: all(held.get(e, {}).get("waiting", 0) > 0 for e in endpoints), within=within
    )


async def autocommit(db: AsyncEngine, *statements: str) -> list[Any]:
    """Run statements outside any transaction (ALTER SYSTEM refuses to run inside one); first column of each."""
    results: list[Any] = []
    async with db.connect() as conn:
        raw = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for statement in statements:
            result = await raw.execute(text(statement))
            results.append(result.scalar() if result.returns_rows else None)
    return results


HOLD_COMMITS = "ALTER SYSTEM SET synchronous_standby_names = 'ecomdream_fault_standby'"
RELEASE_COMMITS = "ALTER SYSTEM RESET synchronous_standby_names"


@contextlib.asynccontextmanager
async def commits_held(db: AsyncEngine) -> AsyncIterator[None]:
    """Every COMMIT waits for a synchronous standby that does not exist: committed locally, not acknowledged.

    When the hold is released the waiting transactions become visible, even if their client died meanwhile:
    exactly the state "the ledger was written but the worker never reported it".
    """
    await autocommit(db, HOLD_COMMITS, "SELECT pg_reload_conf()")
    try:
        yield
    finally:
        await autocommit(db, RELEASE_COMMITS, "SELECT pg_reload_conf()")


async def commits_waiting(db: AsyncEngine, table: str) -> int:
    """Transactions that wrote to table and whose COMMIT waits for the (missing) synchronous standby.

    A waiting transaction still holds its locks, which tells whose commit it is.
    """
    (count,) = await autocommit(
        db,
        "SELECT count(DISTINCT a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
        f" WHERE a.wait_event = 'SyncRep' AND l.relation = '{table}'::regclass",
    )
    return int(count)


async def prompt_row(db: AsyncEngine, prompt_id: str) -> dict[str, Any] | None:
    """The prompt's ledger row."""
    async with db.connect() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM prompts WHERE id = :id"), {"id": prompt_id}))
            .mappings()
            .first()
        )
    return dict(row) if row else None


async def version_row(db: AsyncEngine, version_id: str) -> dict[str, Any]:
    """The version's ledger row."""
    async with db.connect() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM versions WHERE id = :id"), {"id": version_id}))
            .mappings()
            .one()
        )
    return dict(row)


async def replicate_webhook_secret(stack: Stack) -> str:
    """The `whsec_...` secret the Replicate sandbox signs webhooks with (as the real API hands it out)."""
    async with httpx.AsyncClient(base_url=stack.replicate_url, timeout=10) as client:
        response = await client.get(
            "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {SANDBOX_REPLICATE_TOKEN}"}
        )
        response.raise_for_status()
        return str(response.json()["key"])


def standard_webhook_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers: base64 HMAC-SHA256 over `{id}.{timestamp}.{body}` with the decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


async def webhooks_about(stack: Stack, object_id: str) -> list[dict[str, Any]]:
    """Webhook messages the Replicate sandbox produced about one training or prediction, oldest first."""
    results: list[dict[str, Any]] = (await sandbox_get(stack.replicate_url, "/_sandbox/webhooks"))["results"]
    return [w for w in results if w["object_id"] == object_id]
