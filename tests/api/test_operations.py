"""What operators see and do: summaries, details and search attributes, actions, and metrics."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowUpdateFailedError

from ecomdream.config import SANDBOX_STRIPE_KEY
from ecomdream.contracts import journey_id
from ecomdream.contracts.payment import (
    CancelRequest,
    GrantRequest,
    JourneyState,
    OperatorRefund,
    RetryRequest,
)
from ecomdream.contracts.search import JOURNEY_STAGE, NEEDS_OPERATOR, PAYMENT_ID, PLAN_NAME, VERSION_ID
from ecomdream.devstack.stack import Stack
from tests.api.helpers import create_payment, pay, payment_row, stranger, wait_stage
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, info, paid_payment, staged_keys, train
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually
from workflows.journey import JourneyWorkflow

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EMAIL = "operator-view@example.com"


async def operator_view(temporal: Client, payment_id: str) -> tuple[str, str, dict[str, str | None]]:
    """(static summary, current details, search attributes) as the Web UI shows them."""
    handle = temporal.get_workflow_handle(journey_id(payment_id))
    described = await handle.describe()
    summary = await described.static_summary() or ""
    # The same built-in query the Web UI uses to show a workflow's current details.
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    attrs = described.typed_search_attributes
    keys = (PAYMENT_ID, VERSION_ID, JOURNEY_STAGE, PLAN_NAME, NEEDS_OPERATOR)
    values = {key.name: attrs.get(key) for key in keys}
    return summary, metadata.current_details, values


async def trainings_at_replicate(replicate_knobs: httpx.AsyncClient, version_id: str) -> list[dict[str, Any]]:
    """The trainings the Replicate sandbox holds for a version (its zip's URL names the version)."""
    trainings = (await replicate_knobs.get("/_sandbox/trainings")).json()["results"]
    return [t for t in trainings if version_id in str(t["request"]["input"]["input_images"])]


class TestOperatorView:
    async def test_summary_details_and_search_attributes_follow_every_stage(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"training_seconds": 4})
        created = await create_payment(api)
        payment_id = created["payment_id"]
        summary, details, attrs = await operator_view(temporal, payment_id)
        assert "basic_init" in summary
        assert payment_id in summary
        assert details == "Waiting for the customer to pay at checkout"
        assert attrs == {
            "PaymentId": payment_id,
            "VersionId": None,
            "JourneyStage": "awaiting_payment",
            "PlanName": "basic_init",
            "NeedsOperator": None,
        }

        await pay(created["url"], email=EMAIL)
        await wait_stage(temporal, payment_id, "paid")
        _, details, attrs = await eventually(
            lambda: operator_view(temporal, payment_id), lambda v: v[2]["JourneyStage"] == "paid"
        )
        assert details == "Paid — waiting for the customer's photos"

        response = await train(api, payment_id, as_files(valid_photos(5)))
        version_id = response.json()["version_id"]
        _, details, attrs = await eventually(
            lambda: operator_view(temporal, payment_id), lambda v: "Replicate" in v[1]
        )
        assert attrs["JourneyStage"] == "training"
        assert attrs["VersionId"] == version_id
        assert attrs["NeedsOperator"] is None
        assert details.startswith("Training on Replicate, started ")

        found = await eventually(
            lambda: self._list(temporal, f"VersionId = '{version_id}'"),
            lambda ids: ids == [journey_id(payment_id)],
        )
        assert found
        await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
        _, details, attrs = await eventually(
            lambda: operator_view(temporal, payment_id), lambda v: v[2]["JourneyStage"] == "ready"
        )
        assert details == "Ready — 100 of 100 images left"
        assert (await prompt(api, version_id, amount_images=4)).status_code == 201
        _, details, _ = await operator_view(temporal, payment_id)
        assert details == "Ready — 96 of 100 images left"

        described = await temporal.get_workflow_handle(journey_id(payment_id)).describe()
        everything = f"{described.raw_description}{await described.static_summary()}"
        assert EMAIL not in everything, "no personal data in attributes, summaries or details"

    @staticmethod
    async def _list(temporal: Client, query: str) -> list[str]:
        return [w.id async for w in temporal.list_workflows(query)]


class TestOperatorActions:
    async def test_cancel_during_training_cancels_at_replicate_and_refunds_once(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"training_seconds": 60})
        payment_id = await paid_payment(api, temporal)
        version_id = (await train(api, payment_id, as_files(valid_photos(5)))).json()["version_id"]
        await eventually(lambda: trainings_at_replicate(replicate_knobs, version_id), bool)
        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        state: JourneyState = await handle.execute_update(
            JourneyWorkflow.cancel, CancelRequest(reason="customer asked")
        )
        assert state.stage.value == "cancelled"
        assert state.error == "Cancelled by operator: customer asked"

        (ours,) = await trainings_at_replicate(replicate_knobs, version_id)
        assert ours["object"]["status"] == "canceled"
        row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "refunded")
        async with httpx.AsyncClient(base_url=stack.stripe_url) as sandbox:
            refunds = (await sandbox.get("/_sandbox/refunds")).json()["data"]
        assert [r["payment_intent"] for r in refunds].count(row["payment_intent_id"]) == 1
        failed = await info(api, version_id)
        assert (failed["status"], failed["error"]) == ("failed", "Cancelled by operator: customer asked")
        assert await staged_keys(stack, f"staging/{payment_id}/") == []

    async def test_a_failed_training_can_be_retried_once_from_the_same_photos_before_the_refund(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"fail_trainings": True})
        payment_id = await paid_payment(api, temporal)
        version_id = (await train(api, payment_id, as_files(valid_photos(5)))).json()["version_id"]
        failed = await eventually(lambda: info(api, version_id), lambda b: b["status"] == "failed", within=60)
        assert failed["error"]
        # The operator sees the failure and the pending refund; the money has not gone back yet.
        _, details, attrs = await operator_view(temporal, payment_id)
        assert attrs[JOURNEY_STAGE.name] == "awaiting_retry"
        assert re.fullmatch(r"Failed: .+; refund at \d\d:\d\d UTC unless an operator retries", details), (
            details
        )
        assert (await payment_row(db, payment_id))["status"] == "paid"

        await replicate_knobs.post("/_sandbox/config", json={"fail_trainings": False})
        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        state: JourneyState = await handle.execute_update(
            JourneyWorkflow.retry_training, RetryRequest(reason="Replicate had an outage")
        )
        assert (state.stage.value, state.error) == ("training", None)
        ready = await eventually(
            lambda: info(api, version_id), lambda b: b["status"] != "training", within=60
        )
        assert (ready["status"], ready["error"]) == ("ready", None)
        await wait_stage(temporal, payment_id, "ready")

        # Two trainings at Replicate, both from the same zip of the customer's photos.
        ours = await trainings_at_replicate(replicate_knobs, version_id)
        assert sorted(t["object"]["status"] for t in ours) == ["failed", "succeeded"]
        assert len({str(t["request"]["input"]["input_images"]).split("?")[0] for t in ours}) == 1
        # Kept, not refunded; a second retry is refused.
        assert (await payment_row(db, payment_id))["status"] == "paid"
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(JourneyWorkflow.retry_training, RetryRequest(reason="again"))
        assert "only once" in str(refused.value.cause)

    async def test_grant_raises_the_quota_once_with_a_ledger_row(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        grant = GrantRequest(grant_id=uuid.uuid4(), images=50, reason="goodwill after an outage")
        for _ in range(2):
            state = await handle.execute_update(JourneyWorkflow.grant_images, grant)
        assert state.images_quota == 150
        assert (await info(api, version_id))["info"]["images_left"] == 150
        async with db.connect() as conn:
            rows = (await conn.execute(text("SELECT images, reason, version_id FROM quota_grants"))).all()
        assert [(r.images, r.reason, str(r.version_id)) for r in rows] == [
            (50, "goodwill after an outage", version_id)
        ]


class TestRefundsStripeAnswersDifferently:
    async def test_a_payment_refunded_in_the_dashboard_is_adopted_not_refunded_twice(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        row = await eventually(
            lambda: payment_row(db, payment_id), lambda r: r["payment_intent_id"] is not None
        )
        dashboard = stripe.StripeClient(SANDBOX_STRIPE_KEY, base_addresses={"api": stack.stripe_url})
        by_hand = await dashboard.v1.refunds.create_async(params={"payment_intent": row["payment_intent_id"]})

        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        state = await handle.execute_update(JourneyWorkflow.cancel, CancelRequest(reason="customer asked"))

        assert state.stage.value == "cancelled"
        assert state.refund_error is None
        refunded = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "refunded")
        assert refunded["refund_id"] == by_hand.id
        listed = await dashboard.v1.refunds.list_async(params={"payment_intent": row["payment_intent_id"]})
        assert [r.id for r in listed.data] == [by_hand.id]
        _, details, _ = await operator_view(temporal, payment_id)
        assert details == "Cancelled by operator: customer asked; refunded"

    async def test_a_refund_stripe_refuses_ends_the_journey_and_asks_for_an_operator(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        await eventually(lambda: payment_row(db, payment_id), lambda r: r["payment_intent_id"] is not None)
        async with db.begin() as conn:  # the charge is gone at Stripe (say, deleted in a test account)
            await conn.execute(
                text("UPDATE payments SET payment_intent_id = 'pi_gone' WHERE id = :id"), {"id": payment_id}
            )

        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        state = await handle.execute_update(JourneyWorkflow.cancel, CancelRequest(reason="customer asked"))

        assert state.stage.value == "cancelled"
        assert state.refund_error is not None
        assert state.refund_error.startswith("Stripe refused the refund: No such payment_intent")
        row = await payment_row(db, payment_id)
        assert (row["status"], row["refund_id"]) == ("paid", None)
        _, details, attrs = await operator_view(temporal, payment_id)
        assert details.startswith("Cancelled by operator: customer asked; NOT refunded — Stripe refused")
        assert details.endswith("an operator must settle the refund")
        assert attrs["JourneyStage"] == "cancelled"
        assert attrs["NeedsOperator"] == "refund_refused"
        found = await eventually(
            lambda: TestOperatorView._list(temporal, "NeedsOperator = 'refund_refused'"),
            lambda ids: journey_id(payment_id) in ids,
        )
        assert found
        assert await staged_keys(stack, f"staging/{payment_id}/") == []

    async def test_a_refused_refund_of_a_ready_model_can_be_settled_by_refunding_again(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, _ = await ready_model(api, temporal)
        intent = (await payment_row(db, payment_id))["payment_intent_id"]

        async def point_payment_at(value: str) -> None:
            async with db.begin() as conn:
                await conn.execute(
                    text("UPDATE payments SET payment_intent_id = :pi WHERE id = :id"),
                    {"pi": value, "id": payment_id},
                )

        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        await point_payment_at("pi_gone")
        refused = await handle.execute_update(JourneyWorkflow.refund, OperatorRefund(reason="goodwill"))
        assert refused.refund_id is None
        assert refused.error is not None
        assert (await handle.query(JourneyWorkflow.get_state)).refund_error == refused.error

        await point_payment_at(intent)
        settled = await handle.execute_update(JourneyWorkflow.refund, OperatorRefund(reason="goodwill"))
        assert settled.error is None
        assert settled.refund_id is not None
        state = await handle.query(JourneyWorkflow.get_state)
        assert (state.stage.value, state.refund_error) == ("ready", None)
        assert (await payment_row(db, payment_id))["status"] == "refunded"


class TestMetrics:
    async def test_metrics_name_routes_by_template_and_never_carry_ids(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        assert (await prompt(api, version_id)).status_code == 201
        await api.get(f"/api/v1/versions/info/{uuid.uuid4()}", headers=await stranger(api))
        for invented in ("X0Y", "X1Y", "BREW"):
            await api.request(invented, "/health")
        async with httpx.AsyncClient() as client:
            api_metrics = (await client.get(f"http://127.0.0.1:{stack.ports.metrics}/metrics")).text

            async def worker_text() -> str:
                return (await client.get(f"http://127.0.0.1:{stack.ports.worker_metrics}/metrics")).text

            worker_metrics = await eventually(worker_text, lambda t: 'stage="ready"' in t)
        assert 'route="/api/v1/versions/info/{version_id}"' in api_metrics
        assert re.search(
            r'ecomdream_http_requests_total\{.*route="/api/v1/versions/info/\{version_id\}".*status="404"',
            api_metrics,
        )
        assert "ecomdream_http_request_duration_seconds_bucket" in api_metrics
        # Methods are chosen by clients: invented ones share one label instead of growing the series.
        methods = set(re.findall(r'ecomdream_http_requests_total\{[^}]*method="([^"]+)"', api_metrics))
        assert "OTHER" in methods
        assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}, methods
        assert re.search(r'ecomdream_webhooks_total\{outcome="accepted",provider="stripe"\}', api_metrics)
        for name in (
            "ecomdream_journeys_total",
            "ecomdream_trainings_total",
            "ecomdream_prompts_total",
            "ecomdream_images_generated_total",
            "temporal_workflow_completed",
        ):
            assert name in worker_metrics, name
        assert "ecomdream_training_duration_seconds_bucket" in worker_metrics
        for text_ in (api_metrics, worker_metrics):
            labels = re.findall(
                r"\{([^}]*)\}", "\n".join(line for line in text_.splitlines() if not line.startswith("#"))
            )
            assert not [label for label in labels if UUID_RE.search(label)], "no id in any label"
