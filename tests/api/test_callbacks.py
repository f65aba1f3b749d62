"""Signed callbacks from the outside: a receiver on 127.0.0.1 verifies every event with `standardwebhooks`."""

from __future__ import annotations

import re
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import WebhookVerificationError
from temporalio.client import Client

from tests.api.helpers import ADDON_PLAN, create_payment, pay, payment_row, stranger, wait_stage
from tests.api.test_access import raw
from tests.api.test_prompts import prompt
from tests.api.test_training import as_files, info, train
from tests.fixtures.mail import Mailbox
from tests.fixtures.photos import valid_photos
from tests.fixtures.receiver import Receiver, callback_receiver
from tests.fixtures.stack import eventually
from tests.fixtures.wallet import WALLET

EMAIL = "ingeborg@example.com"
FAILED_EMAIL = "torvald@example.com"
PROMPT = "Ingeborg's teapot on the Bergen ferry"


async def events_of(db: AsyncEngine, payment_id: str) -> dict[str, dict[str, Any]]:
    """The payment's rows in `customer_events`, by type (what operators read)."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT * FROM customer_events WHERE payment_id = :id ORDER BY seq"), {"id": payment_id}
            )
        ).mappings()
        return {row["type"]: dict(row) for row in rows}


def part(mail: EmailMessage, subtype: str) -> str:
    """The text of the message's plain or HTML part."""
    body = mail.get_body((subtype,))
    assert body is not None, f"no {subtype} part"
    return str(body.get_content())


async def types_of(receiver: Receiver) -> dict[str, int]:
    """How often each type was accepted."""
    return dict(receiver.types())


async def until_paid(
    api: httpx.AsyncClient, temporal: Client, email: str = EMAIL, **body: Any
) -> dict[str, Any]:
    """A checkout (with body), paid by email."""
    created = await create_payment(api, **body)
    await pay(created["url"], email=email)
    await wait_stage(temporal, created["payment_id"], "paid")
    return created


class TestAJourneysEvents:
    async def test_each_event_reaches_the_receiver_once_signed_and_without_personal_data(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        replicate_knobs: httpx.AsyncClient,
        mailbox: Mailbox,
    ) -> None:
        with callback_receiver() as receiver:
            created = await until_paid(api, temporal, callback_url=receiver.url)
            payment_id, secret = created["payment_id"], created["webhook_secret"]
            assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
            assert secret.removeprefix("whsec_") not in str(await payment_row(db, payment_id))

            trained = await train(api, payment_id, as_files(valid_photos(5)), cls="teapot")
            version_id = trained.json()["version_id"]
            await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
            made = await prompt(api, version_id, prompt=PROMPT, amount_images=4)
            assert made.status_code == 201, made.text
            await replicate_knobs.post("/_sandbox/config", json={"fail_predictions": True})
            assert (await prompt(api, version_id, prompt=PROMPT)).status_code == 502
            addon = await create_payment(api, plan_id=ADDON_PLAN, version_id=version_id)
            await pay(addon["url"], email=EMAIL)

            expected = {
                "payment.paid": 1,
                "version.validating": 1,
                "version.training": 1,
                "version.ready": 1,
                "prompt.succeeded": 1,
                "prompt.failed": 1,
                "addon.applied": 1,
            }
            await eventually(lambda: types_of(receiver), lambda seen: seen == expected, within=60)
            accepted = receiver.accepted()

        assert len({d.webhook_id for d in accepted}) == len(accepted)
        events = {d.event["type"]: d.verified(secret) for d in accepted}
        for delivery in accepted:
            assert re.fullmatch(r"msg_[0-9a-f]{32}", delivery.webhook_id)
            assert delivery.path == "/hooks/ecomdream"
            assert EMAIL.encode() not in delivery.body
            assert b"Bergen" not in delivery.body
            assert b"X-Amz" not in delivery.body
        for type_, event in events.items():
            assert set(event) == {"type", "timestamp", "data"}
            assert event["data"]["payment_id"] == payment_id
            if type_ not in ("payment.paid", "version.validating"):
                assert event["data"]["version_id"] == version_id, type_
        assert events["version.ready"]["data"]["images_left"] == 100
        succeeded = events["prompt.succeeded"]["data"]
        assert (succeeded["prompt_id"], succeeded["images"]) == (made.json()["prompt_id"], 4)
        fetched = await api.get(succeeded["images_path"])
        assert fetched.status_code == 200
        assert len(fetched.json()["images"]) == 4
        assert events["prompt.failed"]["data"]["images"] == 0
        assert events["addon.applied"]["data"]["addon_payment_id"] == addon["payment_id"]
        assert (
            events["addon.applied"]["data"]["images_quota"]
            == 100 + events["addon.applied"]["data"]["images_added"]
        )

        rows = await events_of(db, payment_id)
        assert set(rows) == set(expected)
        for row in rows.values():
            assert (row["callback_state"], row["callback_attempts"]) == ("delivered", 1), row
            assert row["callback_delivered_at"] is not None
            assert row["event_id"] in {d.webhook_id for d in accepted}

        # The customer was mailed twice: the model is ready, the add-on's images arrived.
        mails = await mailbox.wait_for(EMAIL, count=2)
        subjects = sorted(str(m["Subject"]) for m in mails)
        assert len(mails) == 2, subjects
        assert {rows["version.ready"]["email_state"], rows["addon.applied"]["email_state"]} == {"sent"}
        mailed = {str(m["Message-ID"]).strip("<>").split("@")[0] for m in mails}
        assert mailed == {rows["version.ready"]["event_id"], rows["addon.applied"]["event_id"]}
        for mail in mails:
            assert mail.get_body(("plain",)) is not None
            assert mail.get_body(("html",)) is not None
            assert version_id in part(mail, "plain")
            assert "<img" not in part(mail, "html")
            assert "Bergen" not in mail.as_string()

        # Deleting the model is announced too, and the receipt is where the event says.
        with callback_receiver() as receiver:
            moved = await api.put(
                f"/api/v1/payments/{payment_id}/callback", json={"callback_url": receiver.url}
            )
            assert moved.status_code == 200, moved.text
            deleted = await api.delete(f"/api/v1/versions/{version_id}")
            assert deleted.status_code == 202, deleted.text
            await eventually(
                lambda: types_of(receiver), lambda seen: seen == {"version.deleted": 1}, within=60
            )
            (announced,) = receiver.accepted()
        data = announced.verified(secret)["data"]
        assert data["receipt_id"] == deleted.json()["receipt_id"]
        receipt = await api.get(
            data["receipt_path"], headers={"Authorization": f"Bearer {WALLET.token(payment_id)}"}
        )
        assert receipt.status_code == 200
        assert receipt.json()["status"] == "done"
        left = {t for t, row in (await events_of(db, payment_id)).items() if row["version_id"] is not None}
        assert left == {"version.deleted"}, "the model's events went with it"

    async def test_a_receiver_that_fails_at_first_gets_the_event_again_with_the_same_id(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        replicate_knobs: httpx.AsyncClient,
        mailbox: Mailbox,
    ) -> None:
        with callback_receiver(fail_first=2) as receiver:
            created = await until_paid(api, temporal, FAILED_EMAIL, callback_url=receiver.url)
            payment_id, secret = created["payment_id"], created["webhook_secret"]
            await replicate_knobs.post("/_sandbox/config", json={"fail_trainings": True})
            assert (await train(api, payment_id, as_files(valid_photos(5)))).status_code == 201
            # The failed training waits for an operator's retry (12 s on the test stack), then is refunded.
            await eventually(lambda: types_of(receiver), lambda seen: "version.failed" in seen, within=90)
            deliveries = list(receiver.deliveries)

        paid = [d for d in deliveries if d.event["type"] == "payment.paid"]
        assert [d.status for d in paid] == [503, 503, 204]
        assert len({d.webhook_id for d in paid}) == 1
        for delivery in paid:
            assert delivery.verified(secret)["type"] == "payment.paid"
        stamps = [int(d.headers["webhook-timestamp"]) for d in paid]
        assert stamps == sorted(stamps)
        assert stamps[0] < stamps[-1], "each attempt is signed anew"
        failed = next(d for d in deliveries if d.event["type"] == "version.failed" and d.status == 204)
        data = failed.verified(secret)["data"]
        assert data["refund"] == "refunded"
        assert "failed" in data["error"].lower()

        (mail,) = await mailbox.wait_for(FAILED_EMAIL)
        assert "refunded" in part(mail, "plain").lower()

        row = (await events_of(db, payment_id))["payment.paid"]
        assert (row["callback_state"], row["callback_attempts"]) == ("delivered", 3)
        assert row["callback_last_error"] == "the receiver answered HTTP 503"
        assert row["event_id"] == paid[0].webhook_id


class TestChangingTheCallback:
    async def test_set_rotate_gone_and_removed(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        created = await create_payment(api)
        payment_id = created["payment_id"]
        assert "webhook_secret" not in created
        path = f"/api/v1/payments/{payment_id}/callback"
        with callback_receiver() as receiver, callback_receiver(status=410) as gone:
            body = {"callback_url": receiver.url}
            assert (await raw(api, "PUT", path, json=body)).status_code == 401
            assert (await raw(api, "PUT", path, json=body, headers=await stranger(api))).status_code == 404
            assert (await raw(api, "POST", f"{path}/secret")).status_code == 401
            assert (await api.put(path, json={"callback_url": "ftp://example.com"})).status_code == 422

            first = await api.put(path, json=body)
            assert first.status_code == 200, first.text
            assert first.json()["callback_url"] == receiver.url
            old_secret = first.json()["webhook_secret"]
            assert old_secret.startswith("whsec_")
            assert (await api.put(path, json=body)).json()["webhook_secret"] is None, "shown once"
            key = {"Idempotency-Key": str(uuid.uuid4())}
            rotated = await api.post(f"{path}/secret", headers=key)
            assert rotated.status_code == 201
            secret = rotated.json()["webhook_secret"]
            assert secret != old_secret
            assert (await api.post(f"{path}/secret", headers=key)).json() == rotated.json(), (
                "a retry rotates once"
            )
            assert (await api.get(f"/api/v1/payments/{payment_id}")).json()["callback_url"] == receiver.url

            await pay(created["url"], email=EMAIL)
            await eventually(lambda: types_of(receiver), lambda seen: seen == {"payment.paid": 1})
            (paid,) = receiver.accepted()
            assert paid.verified(secret)["type"] == "payment.paid"
            with pytest.raises(WebhookVerificationError):
                paid.verified(old_secret)

            # A receiver that answers 410 Gone is not tried again.
            assert (await api.put(path, json={"callback_url": gone.url})).status_code == 200
            trained = await train(api, payment_id, as_files(valid_photos(5)))
            version_id = trained.json()["version_id"]
            given_up = await eventually(
                lambda: events_of(db, payment_id),
                lambda rows: rows.get("version.validating", {}).get("callback_state") == "gave_up",
            )
            validating = given_up["version.validating"]
            assert validating["callback_attempts"] == 1
            assert "410" in validating["callback_last_error"]

            removed = await api.put(path, json={"callback_url": None})
            assert removed.json()["callback_url"] is None
            await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
            rows = await eventually(lambda: events_of(db, payment_id), lambda rows: "version.ready" in rows)
            assert rows["version.ready"]["callback_state"] is None
            assert [d.event["type"] for d in receiver.deliveries] == ["payment.paid"]
            assert len([d for d in gone.deliveries if d.event["type"] == "version.validating"]) == 1


class TestBadUrls:
    @pytest.mark.parametrize(
        "url",
        ["ftp://example.com/hook", "garbage", "https://", "javascript:alert(1)", "https://a:b@example.com/"],
    )
    async def test_a_url_we_will_not_call_is_422_and_opens_no_checkout(
        self, api: httpx.AsyncClient, db: AsyncEngine, url: str
    ) -> None:
        refused = await raw(api, "POST", "/api/v1/payments/create", json={"plan_id": 1, "callback_url": url})
        assert refused.status_code == 422, refused.text
        assert refused.json()["message"].startswith("callback_url ")
        async with db.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM payments"))).scalar_one() == 0

    async def test_an_addon_has_no_callback_of_its_own(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        body = {
            "plan_id": ADDON_PLAN,
            "version_id": str(uuid.uuid4()),
            "callback_url": "http://127.0.0.1:9/x",
        }
        addon = await raw(api, "POST", "/api/v1/payments/create", json=body)
        assert addon.status_code == 400
        assert "add-on pack's events go to its model's callback URL" in addon.json()["message"]
