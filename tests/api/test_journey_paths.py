"""Journey paths end to end: cancel in each early stage, add-ons for ended journeys, refunds without the
webhook's details — each seen as the customer, the operator and Stripe would."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.contracts import journey_id
from ecomdream.contracts.payment import CancelRequest, JourneyState
from ecomdream.devstack.stack import Stack
from tests.api.helpers import create_payment, pay, payment_row, wait_stage
from tests.api.test_prompts import ready_model
from tests.api.test_training import as_files, info, paid_payment, staged_keys, train
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually
from workflows.journey import JourneyWorkflow


async def cancel(temporal: Client, payment_id: str, reason: str = "customer asked") -> JourneyState:
    """The operator's cancel, as `temporal workflow update execute --name cancel` sends it."""
    handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    return await handle.execute_update(JourneyWorkflow.cancel, CancelRequest(reason=reason))


async def stripe_session(stack: Stack, session_id: str) -> dict[str, Any]:
    """The checkout session as the Stripe sandbox holds it."""
    async with httpx.AsyncClient(base_url=stack.stripe_url) as sandbox:
        body: dict[str, Any] = (await sandbox.get(f"/_sandbox/sessions/{session_id}")).json()
    return body


async def refunds_at_stripe(stack: Stack, payment_intent: str) -> int:
    """How many refunds Stripe made for a charge."""
    async with httpx.AsyncClient(base_url=stack.stripe_url) as sandbox:
        refunds = (await sandbox.get("/_sandbox/refunds")).json()["data"]
    return [r["payment_intent"] for r in refunds].count(payment_intent)


async def charged_payment(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
) -> tuple[str, dict[str, Any]]:
    """A paid journey waiting for photos, once the ledger knows the charge (its payment intent)."""
    payment_id = await paid_payment(api, temporal)
    row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["payment_intent_id"] is not None)
    return payment_id, row


class TestCancelBeforeTheModel:
    async def test_cancel_while_awaiting_payment_closes_the_checkout(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        created = await create_payment(api)
        state = await cancel(temporal, created["payment_id"])

        assert state.stage.value == "cancelled"
        row = await payment_row(db, created["payment_id"])
        assert row["status"] == "expired"
        assert (await stripe_session(stack, row["session_id"]))["status"] == "expired"
        async with httpx.AsyncClient() as browser:
            page = await browser.post(created["url"], data={"email": "late@example.com"})
        assert page.status_code >= 400, "the closed checkout takes no money"
        assert "expired" in page.text

    async def test_cancel_while_waiting_for_photos_refunds_and_ends(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id, row = await charged_payment(api, db, temporal)
        state = await cancel(temporal, payment_id)

        assert (state.stage.value, state.error) == ("cancelled", "Cancelled by operator: customer asked")
        assert (await payment_row(db, payment_id))["status"] == "refunded"
        assert await refunds_at_stripe(stack, row["payment_intent_id"]) == 1
        refused = await train(api, payment_id, as_files(valid_photos(5)))
        assert refused.status_code == 409
        assert refused.json()["message"] == "This payment was cancelled and refunded"

    async def test_a_cancel_repeated_answers_the_same_and_refunds_once(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id, row = await charged_payment(api, db, temporal)
        first = await cancel(temporal, payment_id)
        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        second = await handle.query(JourneyWorkflow.get_state)
        assert first.stage == second.stage
        assert await refunds_at_stripe(stack, row["payment_intent_id"]) == 1
        assert await staged_keys(stack, f"staging/{payment_id}/") == []


class TestAddonForAnEndedJourney:
    async def test_an_addon_the_model_can_no_longer_use_is_refunded(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        addon = await create_payment(api, plan_id=2, version_id=version_id)
        # The model's journey ends before the add-on is paid (an operator terminated it).
        await temporal.get_workflow_handle(journey_id(payment_id)).terminate("operator ended the journey")
        await pay(addon["url"])

        result = await temporal.get_workflow_handle(f"addon-{addon['payment_id']}").result()
        assert result["stage"] == "refunded"
        row = await eventually(
            lambda: payment_row(db, addon["payment_id"]), lambda r: r["status"] == "refunded"
        )
        assert await refunds_at_stripe(stack, row["payment_intent_id"]) == 1
        assert (await info(api, version_id))["info"]["feature_amount_images"] == 100


class TestRefundWithoutTheWebhooksDetails:
    async def test_a_paid_payment_whose_charge_is_not_recorded_is_refunded_through_its_checkout(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id, row = await charged_payment(api, db, temporal)
        async with db.begin() as conn:  # the charge's id never reached us (say, the webhook was cut short)
            await conn.execute(
                text("UPDATE payments SET payment_intent_id = NULL WHERE id = :id"), {"id": payment_id}
            )
        state = await cancel(temporal, payment_id)

        assert state.refund_error is None
        assert (await payment_row(db, payment_id))["status"] == "refunded"
        assert await refunds_at_stripe(stack, row["payment_intent_id"]) == 1

    async def test_money_with_no_charge_to_refund_is_never_recorded_as_refunded(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id, _ = await charged_payment(api, db, temporal)
        async with db.begin() as conn:
            await conn.execute(
                text("UPDATE payments SET payment_intent_id = NULL, session_id = NULL WHERE id = :id"),
                {"id": payment_id},
            )
        state = await cancel(temporal, payment_id)

        assert state.refund_error is not None
        assert "no charge was found" in state.refund_error
        assert state.attention is not None
        assert state.attention.value == "refund_refused"
        assert (await payment_row(db, payment_id))["status"] == "paid"
        await wait_stage(temporal, payment_id, "cancelled")
