"""Deleting a model from the outside: a receipt, nothing left behind, running work stopped; and retention."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from replicate.client import Client as ReplicateClient
from replicate.exceptions import ReplicateError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, ScheduleIntervalSpec, ScheduleOverlapPolicy
from temporalio.testing import ActivityEnvironment

from activities.deletion import RetentionActivities
from ecomdream.clients.storage import Storage
from ecomdream.config import SANDBOX_REPLICATE_TOKEN
from ecomdream.contracts import RETENTION_SCHEDULE_ID, journey_id
from ecomdream.contracts.deletion import Expiry
from ecomdream.db.session import create_sessionmaker
from ecomdream.devstack.stack import Stack
from tests.api.helpers import journey_state, payment_row, stranger, wait_stage
from tests.api.test_access import bearer, raw
from tests.api.test_prompts import listing, prompt, ready_model
from tests.api.test_training import as_files, paid_payment, staged_keys, train
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually
from tests.fixtures.wallet import WALLET


async def receipt(api: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    """GET the deletion's receipt."""
    response = await api.get(status_url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def delete_done(api: httpx.AsyncClient, version_id: str) -> dict[str, Any]:
    """DELETE the model and wait for its receipt to say done."""
    asked = await api.delete(f"/api/v1/versions/{version_id}")
    assert asked.status_code == 202, asked.text
    assert asked.json()["status_url"] == f"/api/v1/deletions/{asked.json()['receipt_id']}"
    # The owner's token reads the receipt (the customer's app keeps it with the receipt).
    WALLET.keep(WALLET.token(version_id), asked.json()["receipt_id"])
    return await eventually(
        lambda: receipt(api, asked.json()["status_url"]), lambda r: r["status"] == "done", within=60
    )


async def replicate_knows(stack: Stack, model_version: str) -> bool:
    """Whether the Replicate sandbox still has the trained version."""
    client = ReplicateClient(api_token=SANDBOX_REPLICATE_TOKEN, base_url=stack.replicate_url)
    key, _, version = model_version.rpartition(":")
    try:
        await client.models.get(key).versions.async_get(version)
    except ReplicateError as error:
        if error.status != 404:
            raise
        return False
    return True


async def served(url: str) -> int:
    """The status an old image URL answers a browser now."""
    async with httpx.AsyncClient() as browser:
        return (await browser.get(url)).status_code


class TestDeletion:
    async def test_a_ready_model_is_deleted_with_everything_made_for_it_and_a_receipt(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        made = await prompt(api, version_id, amount_images=4)
        assert made.status_code == 201, made.text
        image_url = made.json()["images"][0]
        assert await served(image_url) == 200
        share = (await api.post(f"/api/v1/versions/{version_id}/shares")).json()["token"]
        model_version = (await journey_state(temporal, payment_id)).model_version
        assert model_version is not None
        assert await replicate_knows(stack, model_version)
        path = f"/api/v1/versions/{version_id}"
        assert (await raw(api, "DELETE", path)).status_code == 401
        assert (await raw(api, "DELETE", path, headers=await stranger(api))).status_code == 404
        assert (await raw(api, "DELETE", path, headers=bearer(share))).status_code == 403

        done = await delete_done(api, version_id)

        assert done["version_id"] == version_id
        assert done["completed_at"] >= done["requested_at"]
        deleted = done["deleted"]
        assert (deleted["images"], deleted["prompts"], deleted["share_links"]) == (4, 1, 1)
        assert (deleted["replicate_version"], deleted["replicate_model"]) == (1, 1)
        again = await api.delete(path)
        assert (again.status_code, again.json()["receipt_id"]) == (202, done["receipt_id"])
        assert again.json()["status"] == "done"
        # Nothing is left under the model's prefixes, nor at Replicate; old image URLs no longer serve.
        for prefix in (f"staging/{payment_id}/", f"training/{version_id}", httpx.URL(image_url).path[1:]):
            assert await staged_keys(stack, prefix.removeprefix("ecomdream/")) == [], prefix
        assert await served(image_url) != 200
        assert not await replicate_knows(stack, model_version)
        # The model answers 410 to its owner, 404 to anyone else; the journey ended `deleted`.
        info = await api.get(f"/api/v1/versions/info/{version_id}")
        assert info.status_code == 410
        assert "deleted" in info.json()["message"]
        assert (await api.get(f"/api/v1/prompts/list/{version_id}")).status_code == 410
        assert (await prompt(api, version_id)).status_code == 410
        other = await stranger(api)
        for gone in (
            f"/api/v1/versions/info/{version_id}",
            f"/api/v1/deletions/{done['receipt_id']}",
        ):
            assert (await raw(api, "GET", gone, headers=other)).status_code == 404, gone
        assert (
            await raw(api, "GET", f"/api/v1/versions/info/{version_id}", headers=bearer(share))
        ).status_code == 404
        assert (await wait_stage(temporal, payment_id, "deleted")).stage.value == "deleted"
        # Only the ledger stays: the payment's amounts and dates, the model's ids, dates and quota.
        payment = await payment_row(db, payment_id)
        assert (payment["status"], payment["amount_total"]) == ("paid", 1300)
        async with db.connect() as conn:
            version = (
                (await conn.execute(text("SELECT * FROM versions WHERE id = :id"), {"id": version_id}))
                .mappings()
                .one()
            )
            prompts = (await conn.execute(text("SELECT count(*) FROM prompts"))).scalar_one()
        assert (version["status"], version["class_name"], version["model_version"]) == ("deleted", "", None)
        assert (version["training_zip_key"], version["error"], version["images_quota"]) == (None, None, 100)
        assert version["deleted_at"] is not None
        assert prompts == 0

    async def test_deleting_during_training_cancels_it_refunds_and_ends_deleted(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        await replicate_knobs.post("/_sandbox/config", json={"training_seconds": 60})
        payment_id = await paid_payment(api, temporal)
        trained = await train(api, payment_id, as_files(valid_photos(5)))
        assert trained.status_code == 201, trained.text
        version_id = trained.json()["version_id"]
        state = await eventually(
            lambda: journey_state(temporal, payment_id), lambda s: s.training_id is not None, within=30
        )

        done = await delete_done(api, version_id)

        assert (await wait_stage(temporal, payment_id, "deleted")).stage.value == "deleted"
        training = await replicate_knobs.get(
            f"/v1/trainings/{state.training_id}", headers=bearer("r8_sandbox")
        )
        assert training.json()["status"] == "canceled"
        assert done["deleted"]["replicate_version"] == 0, "a cancelled training pushed no version"
        assert done["deleted"]["replicate_model"] == 1, "its destination model is deleted too"
        assert (await payment_row(db, payment_id))["status"] == "refunded", "nothing was delivered"
        assert (await api.get(f"/api/v1/versions/info/{version_id}")).status_code == 410
        journey = temporal.get_workflow_handle(journey_id(payment_id))
        ended = await eventually(
            journey.describe, lambda d: d.status is not None and d.status.name != "RUNNING"
        )
        assert ended.status is not None
        assert ended.status.name == "COMPLETED"

    async def test_deleting_while_a_prompt_generates_cancels_it_and_keeps_none_of_it(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        await replicate_knobs.post("/_sandbox/config", json={"prediction_seconds": 30})
        generating = asyncio.create_task(prompt(api, version_id, prompt="interrupted"))

        async def newest_prediction() -> str:
            found = (await replicate_knobs.get("/_sandbox/predictions")).json()["results"]
            return str(found[0]["object"]["status"]) if found else "none"

        await eventually(newest_prediction, lambda status: status in ("starting", "processing"))

        done = await delete_done(api, version_id)

        assert (await generating).status_code != 201
        assert (await wait_stage(temporal, payment_id, "deleted")).stage.value == "deleted"
        requests = (await replicate_knobs.get("/_sandbox/requests")).json()["endpoints"]
        assert requests["POST /v1/predictions/{prediction_id}/cancel"]["count"] >= 1
        assert done["deleted"]["images"] == 0
        async with db.connect() as conn:
            left = await conn.execute(
                text("SELECT (SELECT count(*) FROM prompts) + (SELECT count(*) FROM images)")
            )
            assert left.scalar_one() == 0


class TestRetention:
    async def test_the_daily_schedule_expires_generated_images_older_than_the_setting(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
    ) -> None:
        schedule = await temporal.get_schedule_handle(RETENTION_SCHEDULE_ID).describe()
        assert schedule.schedule.spec.intervals == [
            ScheduleIntervalSpec(every=timedelta(days=1), offset=timedelta(hours=3))
        ]
        assert schedule.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        _, version_id = await ready_model(api, temporal)
        old = (await prompt(api, version_id, prompt="long ago")).json()
        new = (await prompt(api, version_id, prompt="today")).json()
        async with db.begin() as conn:
            await conn.execute(
                text("UPDATE images SET created_at = now() - interval '400 days' WHERE prompt_id = :id"),
                {"id": old["prompt_id"]},
            )

        await temporal.get_schedule_handle(RETENTION_SCHEDULE_ID).trigger()

        async def images_listed() -> dict[str, int]:
            return {p["id"]: len(p["images"]) for p in (await listing(api, version_id))["prompts"]}

        expected = {old["prompt_id"]: 0, new["prompt_id"]: 1}
        await eventually(images_listed, lambda listed: listed == expected, within=60)
        assert await served(old["images"][0]) != 200
        assert await served(new["images"][0]) == 200

    async def test_old_staged_photos_go_unless_their_model_is_being_trained(
        self, db: AsyncEngine, storage: Storage
    ) -> None:
        training_payment = uuid.uuid4()
        async with db.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO payments (id, plan_id, amount_total, currency) VALUES (:id, 1, 1300, 'usd')"
                ),
                {"id": training_payment},
            )
            await conn.execute(
                text(
                    "INSERT INTO versions (id, payment_id, status, class_name, trigger_token)"
                    " VALUES (:id, :payment, 'training', 'mug', 'TOK')"
                ),
                {"id": uuid.uuid4(), "payment": training_payment},
            )
        in_use = f"staging/{training_payment}/{uuid.uuid4()}/00"
        failed = f"staging/{uuid.uuid4()}/{uuid.uuid4()}/00"
        for key in (in_use, failed):
            await storage.put(key, b"a photo")
        retention = RetentionActivities(create_sessionmaker(db), storage)
        # Everything staged until a minute from now counts as old.
        later = Expiry(before=datetime.now(UTC) + timedelta(minutes=1))

        deleted = await ActivityEnvironment().run(retention.delete_failed_uploads, later)

        assert deleted >= 1
        assert await storage.exists(in_use)
        assert not await storage.exists(failed)
        await storage.delete_prefix(f"staging/{training_payment}/")
