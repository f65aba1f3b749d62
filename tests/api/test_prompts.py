"""Prompts end to end: quota-guarded generation, images copied to our bucket, listing, long journeys."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.contracts import journey_id
from ecomdream.devstack.stack import Stack
from tests.api.helpers import create_payment, journey_state, pay, stranger, wait_stage
from tests.api.test_training import as_files, info, staged_keys, train
from tests.fixtures.files import file_server
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually

TINY_PLAN = 90


async def tiny_plan(db: AsyncEngine, images: int) -> int:
    """An initial plan with a small quota, so boundaries are reached quickly."""
    plan_id = TINY_PLAN + images
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO plans (id, is_init, price, plan_name, plan_description, feature_amount_images)"
                " VALUES (:id, true, 500, :name, 'test plan', :images) ON CONFLICT (id) DO NOTHING"
            ),
            {"id": plan_id, "name": f"tiny_{images}", "images": images},
        )
    return plan_id


async def ready_model(api: httpx.AsyncClient, temporal: Client, plan_id: int = 1) -> tuple[str, str]:
    """Pay, train and wait until the model is ready; returns (payment id, version id)."""
    created = await create_payment(api, plan_id=plan_id)
    await pay(created["url"])
    await wait_stage(temporal, created["payment_id"], "paid")
    response = await train(api, created["payment_id"], as_files(valid_photos(5)), cls="teapot")
    assert response.status_code == 201, response.text
    version_id = response.json()["version_id"]
    await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
    await wait_stage(temporal, created["payment_id"], "ready")
    return created["payment_id"], version_id


async def prompt(api: httpx.AsyncClient, version_id: str, **body: Any) -> httpx.Response:
    """POST /prompts/create."""
    return await api.post(
        f"/api/v1/prompts/create/{version_id}", json={"prompt": "on a beach", "amount_images": 1, **body}
    )


async def listing(api: httpx.AsyncClient, version_id: str, **params: Any) -> dict[str, Any]:
    """GET /prompts/list."""
    response = await api.get(f"/api/v1/prompts/list/{version_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestGenerate:
    async def test_one_and_four_images_with_real_dimensions_from_our_bucket(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        one = await prompt(api, version_id, prompt="a red teapot on a beach", width=768, height=512, seed=7)
        assert one.status_code == 201, one.text
        body = one.json()
        assert body["code"] == 201
        assert len(body["images"]) == 1
        assert body["images_left"] == 99
        assert body["prompt_text"] == "TOK, a red teapot on a beach"
        four = await prompt(
            api,
            version_id,
            amount_images=4,
            negative_prompt="blurry",
            guidance_scale=3.5,
            num_inference_steps=20,
        )
        assert four.status_code == 201, four.text
        assert len(four.json()["images"]) == 4
        assert four.json()["images_left"] == 95
        assert four.json()["prompt_negative"] == "blurry"

        for url in body["images"]:
            assert url.startswith(stack.s3.endpoint_url), "images are served from our bucket, not Replicate"
            async with httpx.AsyncClient() as client:
                image = Image.open(io.BytesIO((await client.get(url)).content))
            assert image.size == (768, 512)

        page = await listing(api, version_id)
        assert [p["num_outputs"] for p in page["prompts"]] == [4, 1]
        newest, oldest = page["prompts"]
        assert newest["status"] == oldest["status"] == "succeeded"
        assert [(i["width"], i["height"]) for i in oldest["images"]] == [(768, 512)]
        assert len(newest["images"]) == 4
        # The first API's clients read cdn_url and is_upscaled.
        assert all(i["cdn_url"] == i["url"] and i["is_upscaled"] is False for i in newest["images"])

        # A later listing hands out the same (still valid) URLs, so browsers serve the images from cache.
        listed_at = time.time()

        async def now() -> float:
            return time.time()

        await eventually(now, lambda t: int(t) > int(listed_at), within=3, every=0.05)
        again = await listing(api, version_id)
        assert [i["url"] for p in again["prompts"] for i in p["images"]] == [
            i["url"] for p in page["prompts"] for i in p["images"]
        ]
        assert oldest["seed"] == 7
        assert page["next_cursor"] is None

        predictions = (await replicate_knobs.get("/_sandbox/predictions")).json()["results"]
        sent = [
            p["request"]["input"]
            for p in predictions
            if p["request"]["input"].get("negative_prompt") == "blurry"
        ]
        assert len(sent) == 1
        assert (sent[0]["guidance_scale"], sent[0]["num_inference_steps"], sent[0]["num_outputs"]) == (
            3.5,
            20,
            4,
        )
        assert sent[0]["prompt"].startswith("TOK teapot, ")

        single = await api.get(f"/api/v1/prompts/{one.json()['prompt_id']}")
        assert single.status_code == 200
        assert single.json()["images"][0]["width"] == 768
        assert (await info(api, version_id))["info"]["images_left"] == 95

    async def test_quota_is_exact_at_the_boundary_and_an_addon_lets_generation_continue(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        _, version_id = await ready_model(api, temporal, await tiny_plan(db, 5))
        assert (await prompt(api, version_id, amount_images=4)).status_code == 201
        too_many = await prompt(api, version_id, amount_images=4)
        assert (too_many.status_code, too_many.json()["message"]) == (402, "You can only generate 1 images")
        last = await prompt(api, version_id, amount_images=1)
        assert last.status_code == 201, last.text
        assert last.json()["images_left"] == 0
        out = await prompt(api, version_id)
        assert out.status_code == 402
        assert (
            out.json()["message"]
            == "You ran out of images, you need to purchase extra package to continue working"
        )

        addon = await create_payment(api, plan_id=2, version_id=version_id)
        await pay(addon["url"])
        await eventually(lambda: info(api, version_id), lambda b: b["info"]["images_left"] == 1000)
        again = await prompt(api, version_id, amount_images=4)
        assert again.status_code == 201, again.text
        assert again.json()["images_left"] == 996

    async def test_concurrent_requests_run_one_at_a_time_and_never_exceed_the_quota(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        _, version_id = await ready_model(api, temporal, await tiny_plan(db, 3))
        burst = await asyncio.gather(*(prompt(api, version_id) for _ in range(20)))
        codes = sorted(r.status_code for r in burst)
        assert 1 <= codes.count(201) <= 3, codes
        assert set(codes) <= {201, 402, 409}, codes
        assert all(
            r.json()["message"] == "Another prompt for this model is still running, please wait"
            for r in burst
            if r.status_code == 409
        )
        while (await prompt(api, version_id)).status_code == 201:
            pass
        prompts = (await listing(api, version_id, limit=100))["prompts"]
        assert sum(len(p["images"]) for p in prompts) == 3
        spans = sorted((p["created_at"], p["finished_at"]) for p in prompts)
        assert all(done <= after for (_, done), (after, _) in itertools.pairwise(spans)), "prompts overlapped"
        assert (await info(api, version_id))["info"]["images_left"] == 0

    async def test_a_failing_prediction_costs_no_quota(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        await replicate_knobs.post("/_sandbox/config", json={"fail_predictions": True})
        failed = await prompt(api, version_id, amount_images=4)
        assert failed.status_code == 502
        assert "No images were charged" in failed.json()["message"]
        assert (await info(api, version_id))["info"]["images_left"] == 100
        (listed,) = (await listing(api, version_id))["prompts"]
        assert listed["status"] == "failed"
        assert listed["error"]
        assert listed["images"] == []
        await replicate_knobs.post("/_sandbox/config", json={"fail_predictions": False})
        assert (await prompt(api, version_id)).status_code == 201
        assert (await info(api, version_id))["info"]["images_left"] == 99

    async def test_an_output_gone_before_the_copy_fails_the_prompt_free_and_leaves_nothing_behind(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        await replicate_knobs.post("/_sandbox/config", json={"lost_outputs": 1})
        failed = await prompt(api, version_id, amount_images=4)
        assert failed.status_code == 502, failed.text
        assert "gone from Replicate" in failed.json()["message"]
        assert "No images were charged" in failed.json()["message"]
        (listed,) = (await listing(api, version_id))["prompts"]
        assert (listed["status"], listed["images"]) == ("failed", [])
        assert (await info(api, version_id))["info"]["images_left"] == 100
        # The three outputs that were still there had been copied; none of them stays in our bucket.
        assert await staged_keys(stack, f"images/{version_id}/{listed['id']}/") == []

    async def test_an_output_from_an_unexpected_place_fails_the_prompt_free_and_never_gets_the_token(
        self,
        api: httpx.AsyncClient,
        db: AsyncEngine,
        temporal: Client,
        stack: Stack,
        replicate_knobs: httpx.AsyncClient,
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        with file_server() as foreign:
            # Outputs listed on another host, then outputs the sandbox redirects to that host.
            for knob in ("output_base_url", "redirect_outputs_to"):
                await replicate_knobs.post("/_sandbox/config", json={knob: foreign.url})
                failed = await prompt(api, version_id, amount_images=4)
                assert failed.status_code == 502, (knob, failed.text)
                assert failed.json()["message"] == (
                    "Generation failed: the generated image came from an unexpected place. "
                    "No images were charged to your quota."
                )
                await replicate_knobs.post("/_sandbox/config", json={knob: None})
            assert foreign.received == [], "the foreign host was never asked, so it never saw our token"
        listed = (await listing(api, version_id))["prompts"]
        assert [(p["status"], p["images"]) for p in listed] == [("failed", [])] * 2
        assert (await info(api, version_id))["info"]["images_left"] == 100
        for failed_prompt in listed:
            assert await staged_keys(stack, f"images/{version_id}/{failed_prompt['id']}/") == []
        assert (await prompt(api, version_id)).status_code == 201, "the sandbox's own outputs are copied"

    async def test_a_slow_generation_answers_202_and_finishes_in_the_background(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        await replicate_knobs.post("/_sandbox/config", json={"prediction_seconds": 12})
        slow = await prompt(api, version_id)
        assert slow.status_code == 202, slow.text
        prompt_id = slow.json()["prompt_id"]

        async def status() -> str:
            return str((await api.get(f"/api/v1/prompts/{prompt_id}")).json()["status"])

        await eventually(status, lambda s: s == "succeeded", within=60)
        assert (await info(api, version_id))["info"]["images_left"] == 99


class TestRejections:
    async def test_unknown_unready_and_invalid_prompts(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        other = await stranger(api)
        unknown = await api.post(
            "/api/v1/prompts/create/00000000-0000-4000-8000-000000000000",
            json={"prompt": "x", "amount_images": 1},
            headers=other,
        )
        assert (unknown.status_code, unknown.json()["message"]) == (404, "Invalid version id")
        listed = await api.get("/api/v1/prompts/list/00000000-0000-4000-8000-000000000000", headers=other)
        assert listed.status_code == 404
        _, version_id = await ready_model(api, temporal)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"amount_images": 2}, "amount_images"),
            ({"prompt": ""}, "prompt"),
            ({"prompt": "   "}, "prompt"),
            ({"prompt": "é" * 501}, "500"),
            ({"width": 1000, "height": 1000}, "must be one of"),
            ({"width": 512}, "both width and height"),
            ({"seed": -1}, "seed"),
            ({"guidance_scale": 99}, "guidance_scale"),
        ]
        for body, fragment in cases:
            response = await prompt(api, version_id, **body)
            assert response.status_code == 422, (body, response.text)
            assert fragment in response.json()["message"], (body, response.json())
        unicode_ok = await prompt(api, version_id, prompt="é" * 490)
        assert unicode_ok.status_code == 201, "500 characters, not bytes"
        bad_cursor = await api.get(f"/api/v1/prompts/list/{version_id}", params={"cursor": "nonsense"})
        assert bad_cursor.status_code == 400


class TestLongJourneys:
    async def test_a_journey_that_continued_as_new_still_serves_info_prompts_and_addons(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        for _ in range(7):
            response = await prompt(api, version_id)
            assert response.status_code == 201, response.text
        state = await eventually(lambda: journey_state(temporal, payment_id), lambda s: s.runs >= 3)
        assert state.prompts_served == 7
        assert state.images_generated == 7
        runs = [w async for w in temporal.list_workflows(f"WorkflowId = '{journey_id(payment_id)}'")]
        assert len(runs) >= 3
        assert sum(1 for r in runs if r.status is not None and r.status.name == "CONTINUED_AS_NEW") >= 2

        addon = await create_payment(api, plan_id=2, version_id=version_id)
        await pay(addon["url"])
        await eventually(lambda: info(api, version_id), lambda b: b["info"]["images_left"] == 1093)
        assert (await prompt(api, version_id, amount_images=4)).status_code == 201
        page1 = await listing(api, version_id, limit=5)
        page2 = await listing(api, version_id, limit=5, cursor=page1["next_cursor"])
        ids = [p["id"] for p in page1["prompts"] + page2["prompts"]]
        assert len(ids) == len(set(ids)) == 8
        assert page2["next_cursor"] is None
