"""Paths recorded from real journeys on the embedded stack: the API, operator updates, sandbox knobs.

Scenarios of a phase run together; a phase that turns a sandbox knob (failing trainings, slow trainings,
Stripe down) runs alone, as knobs are global. Each scenario answers {path: workflow id}.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from ecomdream.contracts import addon_id, journey_id
from ecomdream.contracts.payment import (
    CancelRequest,
    GrantRequest,
    JourneyState,
    OperatorRefund,
    RetryRequest,
)
from ecomdream.devstack.stack import Stack
from tests.api.helpers import ADDON_PLAN, create_payment, journey_state, pay, wait_stage
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, paid_payment, train
from tests.fixtures.photos import truncated_jpeg, valid_photos
from tests.fixtures.stack import TEST_PACE, eventually
from tests.fixtures.wallet import WALLET
from tests.replay.archive import save
from workflows.addon import AddonWorkflow
from workflows.journey import JourneyWorkflow

Recorded = dict[str, str]
Journey = WorkflowHandle[JourneyWorkflow, JourneyState]

PROMPTS_PER_RUN = int(TEST_PACE["ECOMDREAM_JOURNEY_PROMPTS_PER_RUN"])
# Long enough for an operator to cancel the training while Replicate runs it.
SLOW_TRAINING_SECONDS = 120
DEADLINE = 60.0
CANCEL = CancelRequest(reason="customer asked by email")


@dataclass(frozen=True)
class Shop:
    """The running stack as the recorder drives it: the API, Temporal, and the sandboxes' knobs."""

    api: httpx.AsyncClient
    temporal: Client
    stripe: httpx.AsyncClient
    replicate: httpx.AsyncClient

    def journey(self, payment_id: str) -> Journey:
        """The journey bought with payment_id (its latest run)."""
        return self.temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))

    async def state(self, payment_id: str) -> JourneyState:
        """The journey's own view of itself."""
        return await journey_state(self.temporal, payment_id)


@asynccontextmanager
async def knobs(sandbox: httpx.AsyncClient, **changes: Any) -> AsyncIterator[None]:
    """Turn a sandbox's knobs for the block, then back to what they were."""
    before = (await sandbox.get("/_sandbox/config")).json()
    (await sandbox.post("/_sandbox/config", json=changes)).raise_for_status()
    try:
        yield
    finally:
        await sandbox.post("/_sandbox/config", json={name: before[name] for name in changes})


def _expect(what: str, got: object, wanted: object) -> None:
    if got != wanted:
        raise RuntimeError(f"{what}: expected {wanted!r}, got {got!r}")


async def _ready(shop: Shop) -> tuple[str, str]:
    """A paid, trained journey that has continued as new at ready: (payment id, version id)."""
    payment_id, version_id = await ready_model(shop.api, shop.temporal)
    await _run(shop, payment_id, 2)
    return payment_id, version_id


async def _run(shop: Shop, payment_id: str, run: int) -> None:
    """Wait until the journey serves prompts in its run number `run`."""
    await eventually(lambda: shop.state(payment_id), lambda s: s.runs == run, within=DEADLINE)


async def _training(shop: Shop) -> str:
    """A paid journey whose training runs at Replicate."""
    payment_id = await paid_payment(shop.api, shop.temporal)
    response = await train(shop.api, payment_id, as_files(valid_photos(5)))
    _expect("upload", response.status_code, 201)
    await eventually(lambda: shop.state(payment_id), lambda s: s.training_id is not None, within=DEADLINE)
    return payment_id


async def _cancelled(shop: Shop, payment_id: str) -> None:
    state = await shop.journey(payment_id).execute_update(JourneyWorkflow.cancel, CANCEL)
    _expect("stage", state.stage.value, "cancelled")


async def _prompted(shop: Shop, version_id: str) -> str:
    response = await prompt(shop.api, version_id)
    _expect("prompt", response.status_code, 201)
    return f"prompt-{response.json()['prompt_id']}"


async def _last_prompt(shop: Shop, payment_id: str) -> str:
    """The workflow id of the latest prompt of the journey's current run."""
    history = await shop.journey(payment_id).fetch_history()
    children = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
        and e.start_child_workflow_execution_initiated_event_attributes.workflow_type.name == "PromptWorkflow"
    ]
    return children[-1]


async def _paid_addon(shop: Shop, version_id: str) -> str:
    created = await create_payment(shop.api, plan_id=ADDON_PLAN, version_id=version_id)
    await pay(created["url"])
    addon = shop.temporal.get_workflow_handle_for(AddonWorkflow.run, addon_id(created["payment_id"]))
    _expect("add-on", (await addon.result()).stage.value, "applied")
    return addon.id


async def ready_continue_as_new(shop: Shop) -> Recorded:
    """The model is ready: the journey continues as a new run."""
    payment_id, _ = await _ready(shop)
    return {"ready_continue_as_new": journey_id(payment_id)}


async def prompts(shop: Shop) -> Recorded:
    """Prompts past the desk's continue-as-new, one that fails, then an add-on for the model."""
    payment_id, version_id = await _ready(shop)
    served = [await _prompted(shop, version_id) for _ in range(PROMPTS_PER_RUN)]
    await _run(shop, payment_id, 3)
    async with knobs(shop.replicate, fail_predictions=True):
        _expect("failed prompt", (await prompt(shop.api, version_id)).status_code, 502)
    return {
        "prompts_continue_as_new": journey_id(payment_id),
        "prompt_succeeded": served[0],
        "prompt_failed": await _last_prompt(shop, payment_id),
        "addon_applied": await _paid_addon(shop, version_id),
    }


async def operator_refund(shop: Shop) -> Recorded:
    """An operator refunds a ready model's payment (the model keeps working)."""
    payment_id, _ = await _ready(shop)
    refund = OperatorRefund(reason="the customer was not happy with the results")
    _expect(
        "refund", (await shop.journey(payment_id).execute_update(JourneyWorkflow.refund, refund)).error, None
    )
    return {"operator_refund": journey_id(payment_id)}


async def grant(shop: Shop) -> Recorded:
    """An operator grants extra images."""
    payment_id, _ = await _ready(shop)
    request = GrantRequest(grant_id=uuid.uuid4(), images=50, reason="goodwill after an outage")
    state = await shop.journey(payment_id).execute_update(JourneyWorkflow.grant_images, request)
    _expect("quota", state.images_quota, 150)
    return {"grant": journey_id(payment_id)}


async def cancel_awaiting_payment(shop: Shop) -> Recorded:
    """An operator cancels an open checkout."""
    created = await create_payment(shop.api)
    await _cancelled(shop, created["payment_id"])
    return {"cancel_awaiting_payment": journey_id(created["payment_id"])}


async def cancel_paid(shop: Shop) -> Recorded:
    """An operator cancels a paid journey that waits for photos: refunded."""
    payment_id = await paid_payment(shop.api, shop.temporal)
    await _cancelled(shop, payment_id)
    return {"cancel_paid": journey_id(payment_id)}


async def payment_failed(shop: Shop) -> Recorded:
    """A delayed payment method (bank debit) fails after the checkout completed."""
    created = await create_payment(shop.api)
    async with httpx.AsyncClient(timeout=30) as browser:
        paying = await browser.post(created["url"], data={"email": "replay@example.com", "method": "async"})
    _expect("checkout page", paying.status_code, 200)
    session_id = created["url"].rsplit("/", 1)[-1]
    settled = await shop.stripe.post(
        f"/_sandbox/sessions/{session_id}/async_result", data={"outcome": "failed"}
    )
    _expect("async result", settled.status_code, 200)
    await wait_stage(shop.temporal, created["payment_id"], "payment_failed", within=DEADLINE)
    return {"payment_failed": journey_id(created["payment_id"])}


async def invalid_photos(shop: Shop) -> Recorded:
    """The upload has a broken photo: refused with every problem, the journey waits for photos again."""
    payment_id = await paid_payment(shop.api, shop.temporal)
    photos = [("broken.jpg", truncated_jpeg()), *valid_photos(4)]
    _expect("upload", (await train(shop.api, payment_id, as_files(photos))).status_code, 400)
    await wait_stage(shop.temporal, payment_id, "paid")
    return {"invalid_photos": journey_id(payment_id)}


async def cancel_training(shop: Shop) -> Recorded:
    """An operator cancels while Replicate trains: the training is cancelled there, the payment refunded."""
    async with knobs(shop.replicate, training_seconds=SLOW_TRAINING_SECONDS):
        payment_id = await _training(shop)
    await _cancelled(shop, payment_id)
    return {"cancel_training": journey_id(payment_id)}


async def failed_trainings(shop: Shop) -> Recorded:
    """Three trainings fail: one retried by an operator (ready), one cancelled while it waits, one refunded."""
    async with knobs(shop.replicate, fail_trainings=True):
        retried, cancelled, refunded = await asyncio.gather(*(_training(shop) for _ in range(3)))

    async def retry() -> None:
        await wait_stage(shop.temporal, retried, "awaiting_retry", within=DEADLINE)
        retry = RetryRequest(reason="Replicate outage, see status page")
        await shop.journey(retried).execute_update(JourneyWorkflow.retry_training, retry)
        await _run(shop, retried, 2)

    async def cancel() -> None:
        await wait_stage(shop.temporal, cancelled, "awaiting_retry", within=DEADLINE)
        await _cancelled(shop, cancelled)

    await asyncio.gather(retry(), cancel(), wait_stage(shop.temporal, refunded, "failed", within=DEADLINE))
    return {
        "operator_retry": journey_id(retried),
        "cancel_awaiting_retry": journey_id(cancelled),
        "training_failed_refunded": journey_id(refunded),
    }


async def checkout_failed(shop: Shop) -> Recorded:
    """Stripe is down: the checkout cannot be opened (the customer gets a 503)."""
    async with knobs(shop.stripe, unavailable=True):
        response = await shop.api.post("/api/v1/payments/create", json={"plan_id": 1})
    _expect("create payment", response.status_code, 503)
    query = "WorkflowType = 'JourneyWorkflow' AND JourneyStage = 'checkout_failed'"

    async def failed() -> list[str]:
        return [w.id async for w in shop.temporal.list_workflows(query)]

    found = await eventually(failed, lambda ids: len(ids) == 1, within=DEADLINE)
    return {"checkout_failed": found[0]}


@dataclass(frozen=True)
class Scenario:
    """A story told through the stack, and the paths its workflows show."""

    paths: tuple[str, ...]
    run: Callable[[Shop], Awaitable[Recorded]]


PHASES: tuple[tuple[Scenario, ...], ...] = (
    (
        Scenario(("ready_continue_as_new",), ready_continue_as_new),
        Scenario(("prompts_continue_as_new", "prompt_succeeded", "prompt_failed", "addon_applied"), prompts),
        Scenario(("operator_refund",), operator_refund),
        Scenario(("grant",), grant),
        Scenario(("cancel_awaiting_payment",), cancel_awaiting_payment),
        Scenario(("cancel_paid",), cancel_paid),
        Scenario(("payment_failed",), payment_failed),
        Scenario(("invalid_photos",), invalid_photos),
    ),
    (Scenario(("cancel_training",), cancel_training),),
    (Scenario(("operator_retry", "cancel_awaiting_retry", "training_failed_refunded"), failed_trainings),),
    (Scenario(("checkout_failed",), checkout_failed),),
)
PATHS = frozenset(path for phase in PHASES for scenario in phase for path in scenario.paths)


async def record(stack: Stack, label: str, only: set[str]) -> None:
    """Run each phase's scenarios together, then save the paths they showed."""
    temporal = await stack.connect_temporal()
    decode = stack.secrets.payload_codec().decode
    async with (
        httpx.AsyncClient(base_url=stack.api_url, timeout=60, auth=WALLET) as api,
        httpx.AsyncClient(base_url=stack.stripe_url, timeout=30) as stripe,
        httpx.AsyncClient(base_url=stack.replicate_url, timeout=30) as replicate,
    ):
        shop = Shop(api, temporal, stripe, replicate)
        for phase in PHASES:
            chosen = [s for s in phase if not only or only & set(s.paths)]
            for recorded in await asyncio.gather(*(s.run(shop) for s in chosen)):
                for path, workflow_id in recorded.items():
                    if not only or path in only:
                        await save(temporal, workflow_id, path, label, decode)
