"""Payments end to end: plans, checkout on the Stripe sandbox, webhooks, the journey reacting."""

from __future__ import annotations

import uuid

import httpx
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.config import SANDBOX_STRIPE_KEY
from ecomdream.contracts import journey_id
from ecomdream.contracts.search import JOURNEY_STAGE, PAYMENT_ID, PLAN_NAME
from ecomdream.devstack.stack import Stack
from tests.api.helpers import (
    ADDON_PLAN,
    checkout_event,
    create_payment,
    journey_state,
    pay,
    payment_row,
    sandbox_events,
    signed_event,
    wait_stage,
)
from tests.fixtures.stack import eventually
from workflows.journey import JourneyWorkflow

WEBHOOK = "/api/v1/payments/webhook"


class TestPlans:
    async def test_lists_plans_on_sale_fewest_images_first(
        self, api: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        response = await api.get("/api/v1/payments/plans/list")
        assert response.status_code == 200
        body = response.json()
        assert body["code"] == 200
        assert [(p["id"], p["is_init"], p["price"], p["feature_amount_images"]) for p in body["plans"]] == [
            (1, True, 1300, 100),
            (2, False, 1300, 1000),
        ]
        assert set(body["plans"][0]) >= {
            "id",
            "is_init",
            "price",
            "plan_name",
            "plan_description",
            "feature_amount_images",
        }


class TestCreatePayment:
    async def test_pay_on_the_checkout_page_makes_the_journey_paid(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        created = await create_payment(api)
        assert created["code"] == 201
        assert created["promocode_applied"] is False
        assert created["amount_total"] == 1300
        payment_id = created["payment_id"]
        assert (await journey_state(temporal, payment_id)).stage.value == "awaiting_payment"
        assert (await payment_row(db, payment_id))["status"] == "pending"

        page = await pay(created["url"], email="ann@example.com")
        assert page.status_code == 200

        state = await wait_stage(temporal, payment_id, "paid")
        assert state.images_quota == 100
        row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "paid")
        assert row["email"] == "ann@example.com"
        assert row["amount_paid"] == 1300
        assert row["payment_intent_id"].startswith("pi_")
        assert row["session_id"].startswith("cs_")
        assert row["paid_at"] is not None
        status = (await api.get(f"/api/v1/payments/{payment_id}")).json()
        assert status["status"] == "paid"

        described = await temporal.get_workflow_handle(journey_id(payment_id)).describe()
        attrs = described.typed_search_attributes
        assert attrs.get(PAYMENT_ID) == payment_id
        assert attrs.get(PLAN_NAME) == "basic_init"
        assert attrs.get(JOURNEY_STAGE) == "paid"
        assert "ann@example.com" not in (await described.static_summary() or "")

    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            ({"plan_id": 999}, 400, "Invalid plan id"),
            ({"plan_id": ADDON_PLAN}, 400, "You must also provide version id"),
            ({"plan_id": ADDON_PLAN, "version_id": ""}, 400, "You must also provide version id"),
            (
                {"plan_id": ADDON_PLAN, "version_id": str(uuid.uuid4())},
                401,
                "An add-on pack is bought with the model's access token: `Authorization: Bearer`",
            ),
        ],
    )
    async def test_rejects_unusable_plans_and_versions(
        self, api: httpx.AsyncClient, db: AsyncEngine, body: dict[str, object], status: int, message: str
    ) -> None:
        response = await api.post("/api/v1/payments/create", json=body)
        assert response.status_code == status
        assert response.json() == {"code": status, "message": message}

    @pytest.mark.parametrize(
        "body",
        [{"plan_id": "one"}, {}, {"plan_id": 1, "version_id": "not-a-uuid"}, [1, 2], "plain text"],
    )
    async def test_malformed_bodies_get_a_readable_422(
        self, api: httpx.AsyncClient, db: AsyncEngine, body: object
    ) -> None:
        response = await api.post("/api/v1/payments/create", json=body)
        assert response.status_code == 422
        assert response.json()["code"] == 422
        assert len(response.json()["message"]) > 5

    async def test_invalid_json_gets_a_readable_422(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        response = await api.post(
            "/api/v1/payments/create", content=b"{plan_id: 1", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert "not valid JSON" in response.json()["message"]

    async def test_initial_plan_ignores_version_id(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        created = await create_payment(api, version_id=str(uuid.uuid4()))
        assert (await payment_row(db, created["payment_id"]))["version_id"] is None


class TestStripeOutage:
    async def test_checkout_during_an_outage_answers_503_and_leaves_no_open_payment(
        self, api: httpx.AsyncClient, db: AsyncEngine, stripe_knobs: httpx.AsyncClient
    ) -> None:
        await stripe_knobs.post("/_sandbox/config", json={"unavailable": True})
        with_code = await api.post("/api/v1/payments/create", json={"plan_id": 1, "promocode_id": "SPRING20"})
        plain = await api.post("/api/v1/payments/create", json={"plan_id": 1})
        await stripe_knobs.post("/_sandbox/config", json={"unavailable": False})

        for refused in (with_code, plain):
            assert refused.status_code == 503, refused.text
            assert refused.json() == {
                "code": 503,
                "message": "We could not reach the payment provider, please try again",
            }
        # The promotion code is looked up before anything is recorded; the checkout that Stripe could
        # not open is on record as failed. Nothing is left pending, waiting for money.
        async with db.connect() as conn:
            statuses = (await conn.execute(text("SELECT status FROM payments"))).scalars().all()
        assert statuses == ["failed"]
        created = await create_payment(api, promocode_id="SPRING20")
        assert created["promocode_applied"] is True


class TestPromotionCodes:
    @pytest.mark.parametrize(
        ("code", "applied", "amount"),
        [
            ("SPRING20", True, 1040),
            ("spring20", True, 1040),
            ("promo_spring20", True, 1040),
            ("NOSUCHCODE", False, 1300),
            ("promo_doesnotexist", False, 1300),
            ("OLDCODE", False, 1300),
            ("EXPIRED10", False, 1300),
        ],
    )
    async def test_codes_apply_or_are_reported_not_applied(
        self, api: httpx.AsyncClient, db: AsyncEngine, code: str, applied: bool, amount: int
    ) -> None:
        created = await create_payment(api, promocode_id=code)
        assert created["promocode_applied"] is applied
        assert created["amount_total"] == amount
        row = await payment_row(db, created["payment_id"])
        assert row["amount_total"] == amount
        assert (row["promocode_id"] is not None) is applied

    async def test_a_100_percent_code_needs_no_payment_and_still_unlocks_the_journey(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        created = await create_payment(api, promocode_id="FREE100")
        assert created["promocode_applied"] is True
        assert created["amount_total"] == 0
        await pay(created["url"])
        await wait_stage(temporal, created["payment_id"], "paid")
        row = await eventually(
            lambda: payment_row(db, created["payment_id"]), lambda r: r["status"] == "paid"
        )
        assert row["payment_intent_id"] is None
        assert row["amount_paid"] == 0


class TestStripeWebhook:
    async def test_forged_signature_is_rejected_and_changes_nothing(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        created = await create_payment(api)
        payment_id = created["payment_id"]
        body, header = signed_event(
            checkout_event("checkout.session.completed", payment_id), secret="whsec_wrong"
        )
        response = await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
        assert response.status_code == 400
        assert response.json()["message"] == "Invalid Stripe signature"
        missing = await api.post(WEBHOOK, content=body)
        assert missing.status_code == 400
        tampered_body, good_header = signed_event(checkout_event("checkout.session.completed", payment_id))
        altered = tampered_body.replace(b'"amount_total": 1300', b'"amount_total": 1')
        assert (
            await api.post(WEBHOOK, content=altered, headers={"stripe-signature": good_header})
        ).status_code == 400
        assert (await journey_state(temporal, payment_id)).stage.value == "awaiting_payment"
        row = await payment_row(db, payment_id)
        assert (row["status"], row["email"], row["paid_at"]) == ("pending", None, None)

    async def test_event_signed_by_the_official_library_helper_is_accepted(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        created = await create_payment(api)
        payment_id = created["payment_id"]
        body, header = signed_event(checkout_event("checkout.session.completed", payment_id))
        response = await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
        assert response.status_code == 200, response.text
        await wait_stage(temporal, payment_id, "paid")
        row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "paid")
        assert row["email"] == "signed@example.com"

    async def test_duplicates_and_a_late_expired_have_exactly_one_effect(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        created = await create_payment(api)
        payment_id = created["payment_id"]
        event = checkout_event("checkout.session.completed", payment_id)
        for _ in range(3):
            body, header = signed_event(event)
            assert (
                await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
            ).status_code == 200
        expired = checkout_event(
            "checkout.session.expired", payment_id, payment_status="unpaid", status="expired"
        )
        body, header = signed_event(expired)
        assert (
            await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
        ).status_code == 200

        # Both taken in, and the payment recorded (the stage moves on after the ledger write).
        state = await eventually(
            lambda: journey_state(temporal, payment_id),
            lambda s: expired["id"] in s.seen_events and s.stage.value != "awaiting_payment",
        )
        assert state.stage.value == "paid"
        assert state.seen_events.count(event["id"]) == 1
        assert state.images_quota == 100
        row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "paid")
        first_paid_at = row["paid_at"]
        body, header = signed_event(event)
        await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
        assert (await payment_row(db, payment_id))["paid_at"] == first_paid_at

    async def test_sandbox_redelivery_of_the_same_event_is_harmless(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        created = await create_payment(api)
        payment_id = created["payment_id"]
        await pay(created["url"])
        await wait_stage(temporal, payment_id, "paid")
        session_id = (await payment_row(db, payment_id))["session_id"]
        (completed,) = await sandbox_events(stack.stripe_url, session_id)
        event_id = completed["id"]
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                assert (await client.post(f"{stack.stripe_url}/_sandbox/events/{event_id}/resend")).is_success

        async def deliveries() -> int:
            (record,) = await sandbox_events(stack.stripe_url, session_id)
            return sum(1 for d in record["deliveries"] if 200 <= (d["status"] or 0) < 300)

        await eventually(deliveries, lambda n: n >= 3)
        state = await journey_state(temporal, payment_id)
        assert state.stage.value == "paid"
        assert state.seen_events == (event_id,)

    async def test_expired_checkout_ends_the_journey(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        created = await create_payment(api)
        payment_id = created["payment_id"]
        session_id = (await payment_row(db, payment_id))["session_id"]
        client = stripe.StripeClient(SANDBOX_STRIPE_KEY, base_addresses={"api": stack.stripe_url})
        client.v1.checkout.sessions.expire(session_id)
        handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        assert (await handle.result()).stage.value == "expired"
        row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "expired")
        assert row["paid_at"] is None
        async with httpx.AsyncClient() as browser:
            late = await browser.post(created["url"], data={"email": "late@example.com"})
        assert late.status_code >= 400

    async def test_events_for_unknown_payments_are_acknowledged(
        self, api: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        body, header = signed_event(checkout_event("checkout.session.completed", str(uuid.uuid4())))
        response = await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
        assert response.status_code == 200

    async def test_unhandled_event_types_are_acknowledged(
        self, api: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        event = checkout_event("charge.succeeded", str(uuid.uuid4()))
        body, header = signed_event(event)
        assert (
            await api.post(WEBHOOK, content=body, headers={"stripe-signature": header})
        ).status_code == 200
