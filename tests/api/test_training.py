"""Training end to end: upload → validation → zip → Replicate training → ready (or failed and refunded)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.contracts import journey_id
from ecomdream.contracts.search import JOURNEY_STAGE, VERSION_ID
from ecomdream.devstack.stack import Stack
from tests.api.helpers import create_payment, journey_state, pay, payment_row, stranger, wait_stage
from tests.fixtures.photos import decompression_bomb, photo, truncated_jpeg, valid_photos
from tests.fixtures.stack import eventually, open_storage
from tests.fixtures.wallet import WALLET

Files = list[tuple[str, tuple[str, bytes, str]]]


def as_files(photos: list[tuple[str, bytes]], field: str = "images") -> Files:
    """Multipart file fields as httpx takes them."""
    return [(field, (name, data, "image/jpeg")) for name, data in photos]


async def train(
    api: httpx.AsyncClient, payment_id: str, photos: Files, cls: str | None = "sneaker"
) -> httpx.Response:
    """POST the photos for training."""
    params = {"class": cls} if cls is not None else {}
    return await api.post(f"/api/v1/versions/train/{payment_id}", params=params, files=photos, timeout=120)


async def info(api: httpx.AsyncClient, version_id: str) -> dict[str, Any]:
    """GET the model's status."""
    response = await api.get(f"/api/v1/versions/info/{version_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def paid_payment(api: httpx.AsyncClient, temporal: Client) -> str:
    """A payment whose journey is paid and waiting for photos."""
    created = await create_payment(api)
    await pay(created["url"])
    await wait_stage(temporal, created["payment_id"], "paid")
    return str(created["payment_id"])


async def staged_keys(stack: Stack, prefix: str) -> list[str]:
    """Objects left in the bucket under prefix."""
    async with AsyncExitStack() as exits:
        return await (await open_storage(stack, exits)).list_keys(prefix)


class TestTrainingSucceeds:
    async def test_photos_to_ready_model_with_progress_and_cleanup(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"training_seconds": 4})
        payment_id = await paid_payment(api, temporal)
        response = await train(api, payment_id, as_files(valid_photos(6)))
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["code"], body["message"]) == (201, "Training started")
        version_id = body["version_id"]

        first = await info(api, version_id)
        assert first["status"] == "training"
        assert first["is_ready"] is False
        assert first["info"] is None
        during = await eventually(lambda: info(api, version_id), lambda b: 0 < (b["progress"] or 0) < 1)
        assert during["status"] == "training"
        ready = await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
        assert ready["is_ready"] is True
        assert ready["progress"] == 1.0
        assert ready["error"] is None
        assert ready["info"]["class_name"] == "sneaker"
        # The first API's clients read these names; they stay.
        assert ready["info"]["class"] == "sneaker"
        assert ready["info"]["identifier"] == ready["info"]["trigger_token"]
        assert ready["info"]["deleted_at"] is None
        assert ready["info"]["extended_info"] == {"amount_images_generated": 0, "feature_amount_images": 100}
        assert ready["info"]["feature_amount_images"] == 100
        assert ready["info"]["amount_images_generated"] == 0
        assert ready["info"]["images_left"] == 100

        state = await wait_stage(temporal, payment_id, "ready")
        assert str(state.version_id) == version_id
        described = await temporal.get_workflow_handle(journey_id(payment_id)).describe()
        assert described.typed_search_attributes.get(VERSION_ID) == version_id
        assert described.typed_search_attributes.get(JOURNEY_STAGE) == "ready"
        # The customer's photos, and the zip made of them, are gone once the model exists.
        await eventually(lambda: staged_keys(stack, f"staging/{payment_id}/"), lambda keys: keys == [])
        await eventually(lambda: staged_keys(stack, f"training/{version_id}"), lambda keys: keys == [])
        assert (await payment_row(db, payment_id))["version_id"] is not None

        async with httpx.AsyncClient(base_url=stack.replicate_url) as sandbox:
            trainings = (await sandbox.get("/_sandbox/trainings")).json()["results"]
        ours = [t for t in trainings if version_id in str(t["request"]["input"]["input_images"])]
        assert len(ours) == 1
        assert ours[0]["request"]["destination"].endswith(version_id)
        assert ours[0]["object"]["status"] == "succeeded"

        again = await train(api, payment_id, as_files(valid_photos(5)))
        assert again.status_code == 409
        assert again.json()["message"] == "You already have a model for this payment"

    async def test_readiness_is_detected_by_polling_when_webhooks_are_lost(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"drop_webhooks": True})
        payment_id = await paid_payment(api, temporal)
        response = await train(api, payment_id, as_files(valid_photos(5)))
        assert response.status_code == 201, response.text
        ready = await eventually(
            lambda: info(api, response.json()["version_id"]), lambda b: b["status"] == "ready", within=60
        )
        assert ready["is_ready"] is True
        webhooks = (await replicate_knobs.get("/_sandbox/webhooks")).json()["results"]
        training_id = (await journey_state(temporal, payment_id)).training_id
        ours = [w for w in webhooks if w["object_id"] == training_id]
        assert ours, "the sandbox should have produced the completion webhook"
        assert {w["state"] for w in ours} == {"dropped"}


class TestTrainingFails:
    async def test_failed_training_marks_the_model_failed_refunds_once_and_deletes_photos(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"fail_trainings": True})
        payment_id = await paid_payment(api, temporal)
        response = await train(api, payment_id, as_files(valid_photos(5)))
        assert response.status_code == 201, response.text
        version_id = response.json()["version_id"]
        failed = await eventually(lambda: info(api, version_id), lambda b: b["status"] == "failed", within=60)
        assert failed["is_ready"] is False
        assert "failed" in failed["error"]
        state = await wait_stage(temporal, payment_id, "failed")
        assert state.error
        row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "refunded")
        assert row["refund_id"].startswith("re_")
        async with httpx.AsyncClient(base_url=stack.stripe_url) as sandbox:
            refunds = (await sandbox.get("/_sandbox/refunds")).json()["data"]
        assert [r["payment_intent"] for r in refunds].count(row["payment_intent_id"]) == 1
        assert await staged_keys(stack, f"staging/{payment_id}/") == []
        assert await staged_keys(stack, f"training/{version_id}") == []


class TestUploadValidation:
    async def test_every_bad_photo_is_reported_at_once_and_the_customer_can_retry(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        bad = [
            ("truncated.jpg", truncated_jpeg()),
            ("small.png", photo(300, 300, fmt="PNG")),
            ("animation.gif", photo(600, 600, fmt="GIF")),
            ("notes.jpg", b"these are my notes, not a photo\n" * 10),
            ("bomb.png", decompression_bomb()),
        ]
        response = await train(api, payment_id, as_files(valid_photos(5) + bad))
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["message"] == "Some images are not suitable for training"
        assert [e["file"] for e in body["errors"]] == [name for name, _ in bad]
        assert all(e["error"] for e in body["errors"])
        assert (await journey_state(temporal, payment_id)).stage.value == "paid"
        assert await staged_keys(stack, f"staging/{payment_id}/") == []

        retry = await train(api, payment_id, as_files(valid_photos(5)))
        assert retry.status_code == 201, retry.text

    async def test_two_concurrent_requests_start_exactly_one_training(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        first, second = await asyncio.gather(
            train(api, payment_id, as_files(valid_photos(5))),
            train(api, payment_id, as_files(valid_photos(5))),
        )
        assert sorted([first.status_code, second.status_code]) == [201, 409]
        loser = first if first.status_code == 409 else second
        assert loser.json()["message"] in {
            "Your photos are already being processed, please wait",
            "You already have a model for this payment",
        }

    async def test_unpaid_payment_cannot_train(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        created = await create_payment(api)
        response = await train(api, created["payment_id"], as_files(valid_photos(5)))
        assert response.status_code == 402
        assert response.json()["message"] == "You must pay to train model"

    @pytest.mark.parametrize(
        ("cls", "message"),
        [
            (None, "Provide class"),
            ("", "Provide class"),
            ("x" * 41, "1-40 letters"),
            ("shoe<script>", "1-40 letters"),
        ],
    )
    async def test_class_must_be_short_plain_words(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, cls: str | None, message: str
    ) -> None:
        response = await train(api, await paid_payment(api, temporal), as_files(valid_photos(5)), cls=cls)
        assert response.status_code == 400
        assert message in response.json()["message"]

    async def test_count_and_shape_of_the_upload_are_checked(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        few = await train(api, payment_id, as_files(valid_photos(4)))
        assert (few.status_code, few.json()["message"]) == (
            400,
            "You must provide at least 5 images to successfully train AI",
        )
        many = await train(api, payment_id, as_files([("p.jpg", b"x")] * 31))
        assert (many.status_code, many.json()["message"]) == (400, "You can only upload 30 images")
        not_multipart = await api.post(f"/api/v1/versions/train/{payment_id}?class=shoe", json={"images": []})
        assert not_multipart.status_code == 400
        assert "multipart/form-data" in not_multipart.json()["message"]
        unknown = await api.post(
            "/api/v1/versions/train/00000000-0000-4000-8000-000000000000",
            params={"class": "shoe"},
            files=as_files(valid_photos(5)),
            headers={"Authorization": f"Bearer {WALLET.token(payment_id)}"},
        )
        assert (unknown.status_code, unknown.json()["message"]) == (404, "Invalid payment id")
        not_uuid = await api.post(
            "/api/v1/versions/train/not-a-uuid",
            params={"class": "shoe"},
            files=as_files(valid_photos(5)),
            headers={"Authorization": f"Bearer {WALLET.token(payment_id)}"},
        )
        assert not_uuid.status_code == 422
        assert await staged_keys(stack, f"staging/{payment_id}/") == []
        assert (await journey_state(temporal, payment_id)).stage.value == "paid"

    async def test_a_photo_over_the_size_limit_is_refused_with_413(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        huge = ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (26 * 1024 * 1024))
        response = await train(api, payment_id, as_files([*valid_photos(4), huge]))
        assert response.status_code == 413
        assert response.json()["message"] == "huge.jpg is larger than the 25 MB limit per photo"
        assert await staged_keys(stack, f"staging/{payment_id}/") == []

    async def test_duplicate_file_names_are_told_apart(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        same_name = [("image.jpg", data) for _, data in valid_photos(5)]
        same_name.append(("image.jpg", photo(300, 300)))
        response = await train(api, payment_id, as_files(same_name))
        assert response.status_code == 400
        assert [e["file"] for e in response.json()["errors"]] == ["image (6).jpg"]


class TestVersionInfo:
    async def test_unknown_version_is_404(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        response = await api.get(
            "/api/v1/versions/info/00000000-0000-4000-8000-000000000000", headers=await stranger(api)
        )
        assert response.status_code == 404
        assert response.json() == {"code": 404, "message": "Invalid version id"}


class TestReplicateWebhook:
    async def test_bad_signature_is_rejected(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        response = await api.post(
            "/api/v1/replicate/webhook?target=journey-00000000-0000-4000-8000-000000000000",
            content=b'{"id": "x", "status": "succeeded"}',
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": "1700000000",
                "webhook-signature": "v1,AAAA",
            },
        )
        assert response.status_code == 400
        assert response.json()["message"] == "Invalid Replicate signature"


async def sign_replicate(stack: Stack, body: bytes, *, webhook_id: str, timestamp: int) -> dict[str, str]:
    """Standard Webhooks headers signed with the sandbox account's real secret."""
    import base64
    import hashlib
    import hmac

    from ecomdream.config import SANDBOX_REPLICATE_TOKEN

    async with httpx.AsyncClient(base_url=stack.replicate_url) as sandbox:
        secret = (
            await sandbox.get(
                "/v1/webhooks/default/secret", headers={"authorization": f"Bearer {SANDBOX_REPLICATE_TOKEN}"}
            )
        ).json()["key"]
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


class TestReplicateWebhookSigning:
    async def test_replayed_old_webhook_is_rejected(
        self, api: httpx.AsyncClient, db: AsyncEngine, stack: Stack
    ) -> None:
        import time

        body = b'{"id": "t1", "status": "succeeded"}'
        headers = await sign_replicate(stack, body, webhook_id="msg_old", timestamp=int(time.time()) - 3600)
        response = await api.post(
            "/api/v1/replicate/webhook?target=journey-00000000-0000-4000-8000-000000000000",
            content=body,
            headers=headers,
        )
        assert response.status_code == 400

    async def test_altered_body_is_rejected_and_unknown_journeys_are_acknowledged(
        self, api: httpx.AsyncClient, db: AsyncEngine, stack: Stack
    ) -> None:
        import time

        body = b'{"id": "t1", "status": "succeeded"}'
        headers = await sign_replicate(stack, body, webhook_id="msg_new", timestamp=int(time.time()))
        url = "/api/v1/replicate/webhook?target=journey-00000000-0000-4000-8000-000000000000"
        altered = await api.post(url, content=body.replace(b"succeeded", b"failed"), headers=headers)
        assert altered.status_code == 400
        accepted = await api.post(url, content=body, headers=headers)
        assert accepted.status_code == 200


class TestAddons:
    async def test_an_addon_raises_the_quota_of_a_ready_model_exactly_once(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        not_ready_yet = await train(api, payment_id, as_files(valid_photos(5)))
        version_id = not_ready_yet.json()["version_id"]
        early = await api.post("/api/v1/payments/create", json={"plan_id": 2, "version_id": version_id})
        if early.status_code != 201:
            assert (early.status_code, early.json()["message"]) == (
                409,
                "Please wait for your version to be ready",
            )
        await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)

        addon = await create_payment(api, plan_id=2, version_id=version_id)
        cannot_train = await train(api, addon["payment_id"], as_files(valid_photos(5)))
        assert cannot_train.status_code == 403
        await pay(addon["url"])
        raised = await eventually(
            lambda: info(api, version_id), lambda b: b["info"]["feature_amount_images"] > 100
        )
        assert raised["info"]["feature_amount_images"] == 1100
        assert raised["info"]["images_left"] == 1100

        session_id = (await payment_row(db, addon["payment_id"]))["session_id"]
        async with httpx.AsyncClient(base_url=stack.stripe_url) as sandbox:
            (event,) = (await sandbox.get("/_sandbox/events", params={"object_id": session_id})).json()[
                "data"
            ]
            assert (await sandbox.post(f"/_sandbox/events/{event['id']}/resend")).is_success

            async def delivered() -> int:
                record = (await sandbox.get(f"/_sandbox/events/{event['id']}")).json()
                return sum(1 for d in record["deliveries"] if 200 <= (d["status"] or 0) < 300)

            await eventually(delivered, lambda n: n >= 2)
        addon_handle = temporal.get_workflow_handle(f"addon-{addon['payment_id']}")
        assert (await addon_handle.result())["stage"] == "applied"
        state = await journey_state(temporal, payment_id)
        assert state.images_quota == 1100
        assert [str(a) for a in state.applied_addons] == [addon["payment_id"]]
        assert (await info(api, version_id))["info"]["feature_amount_images"] == 1100
        assert (await payment_row(db, addon["payment_id"]))["status"] == "paid"
