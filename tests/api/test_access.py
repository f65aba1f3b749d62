"""Who may do what, from the outside: tokens, share links, idempotent paid writes and the abuse limits."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.devstack.processes import ManagedProcess, free_port, http_ok
from ecomdream.devstack.stack import REPO_ROOT, Stack
from tests.api.helpers import create_payment, payment_row, stranger, wait_stage
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, paid_payment, train
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually
from tests.fixtures.wallet import WALLET


def bearer(token: str) -> dict[str, str]:
    """The header a client sends."""
    return {"Authorization": f"Bearer {token}"}


async def raw(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request with exactly the headers given (the customer's wallet stays out of it)."""
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=60) as client:
        return await client.request(method, path, **kwargs)


class TestTokens:
    async def test_a_checkout_answers_a_fresh_token_once(
        self, api: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        first, second = await create_payment(api), await create_payment(api)
        assert len(first["access_token"]) >= 32
        assert re.fullmatch(r"[A-Za-z0-9_-]+", first["access_token"])
        assert first["access_token"] != second["access_token"]
        row = await payment_row(db, first["payment_id"])
        assert first["access_token"] not in str(row), "only a digest of the token is stored"
        status = await raw(
            api, "GET", f"/api/v1/payments/{first['payment_id']}", headers=bearer(first["access_token"])
        )
        assert status.status_code == 200

    @pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token abc"])
    async def test_no_or_malformed_token_is_401_with_the_scheme_named(
        self, api: httpx.AsyncClient, db: AsyncEngine, header: str | None
    ) -> None:
        created = await create_payment(api)
        headers = {} if header is None else {"Authorization": header}
        for method, path in (
            ("GET", f"/api/v1/payments/{created['payment_id']}"),
            ("GET", f"/api/v1/versions/info/{uuid.uuid4()}"),
            ("GET", f"/api/v1/prompts/list/{uuid.uuid4()}"),
            ("GET", f"/api/v1/prompts/{uuid.uuid4()}"),
            ("POST", f"/api/v1/payments/{created['payment_id']}/token"),
        ):
            response = await raw(api, method, path, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["code"] == 401
            assert "Authorization: Bearer" in response.json()["message"]

    async def test_public_routes_need_no_token(self, api: httpx.AsyncClient, db: AsyncEngine) -> None:
        for path in ("/health", "/api/v1/payments/plans/list"):
            assert (await raw(api, "GET", path)).status_code == 200, path


class TestTwoCustomers:
    async def test_a_stranger_can_neither_see_nor_touch_another_customers_things(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        made = await prompt(api, version_id, amount_images=1)
        assert made.status_code == 201
        prompt_id = made.json()["prompt_id"]
        other = await stranger(api)
        unknown = str(uuid.uuid4())

        async def as_stranger(method: str, path: str, **kwargs: Any) -> httpx.Response:
            return await raw(api, method, path, headers=other, **kwargs)

        pairs = [
            ("GET", f"/api/v1/payments/{payment_id}", f"/api/v1/payments/{unknown}", {}),
            ("GET", f"/api/v1/versions/info/{version_id}", f"/api/v1/versions/info/{unknown}", {}),
            ("GET", f"/api/v1/prompts/list/{version_id}", f"/api/v1/prompts/list/{unknown}", {}),
            ("GET", f"/api/v1/prompts/{prompt_id}", f"/api/v1/prompts/{unknown}", {}),
            (
                "POST",
                f"/api/v1/prompts/create/{version_id}",
                f"/api/v1/prompts/create/{unknown}",
                {"json": {"prompt": "mine now", "amount_images": 1}},
            ),
            ("POST", f"/api/v1/versions/{version_id}/shares", f"/api/v1/versions/{unknown}/shares", {}),
            ("GET", f"/api/v1/versions/{version_id}/shares", f"/api/v1/versions/{unknown}/shares", {}),
            ("POST", f"/api/v1/payments/{payment_id}/token", f"/api/v1/payments/{unknown}/token", {}),
        ]
        for method, theirs, nobodys, kwargs in pairs:
            seen = await as_stranger(method, theirs, **kwargs)
            missing = await as_stranger(method, nobodys, **kwargs)
            assert seen.status_code == 404, (method, theirs, seen.text)
            assert seen.json() == missing.json(), "a stranger cannot tell that the id exists"
        upload = await as_stranger(
            "POST",
            f"/api/v1/versions/train/{payment_id}",
            params={"class": "shoe"},
            files=as_files(valid_photos(5)),
        )
        assert upload.status_code == 404
        addon = await as_stranger(
            "POST", "/api/v1/payments/create", json={"plan_id": 2, "version_id": version_id}
        )
        assert addon.status_code == 404
        # Nothing happened to the owner's model.
        owner = await api.get(f"/api/v1/versions/info/{version_id}")
        assert owner.json()["info"]["images_left"] == 99
        assert len((await api.get(f"/api/v1/prompts/list/{version_id}")).json()["prompts"]) == 1

    async def test_image_urls_name_no_payment_version_or_prompt(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        made = await prompt(api, version_id, amount_images=4)
        assert made.status_code == 201
        urls = made.json()["images"]
        assert len(urls) == 4
        for url in urls:
            path = httpx.URL(url).path
            for named in (payment_id, version_id, made.json()["prompt_id"]):
                assert named not in url
                assert named.replace("-", "") not in url
            assert re.fullmatch(r"/[\w.-]+/images/[0-9a-f]{32}\.png", path), path
            expires = int(httpx.URL(url).params["X-Amz-Expires"])
            assert expires <= 3600, "image links live an hour, not a week"
            async with httpx.AsyncClient() as browser:
                assert (await browser.get(url)).status_code == 200


class TestRotation:
    async def test_a_rotated_token_works_and_the_old_one_stops_at_once(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        old = WALLET.token(payment_id)
        rotated = await raw(api, "POST", f"/api/v1/payments/{payment_id}/token", headers=bearer(old))
        assert rotated.status_code == 201
        new = rotated.json()["access_token"]
        assert new != old
        assert len(new) >= 32
        for path in (f"/api/v1/versions/info/{version_id}", f"/api/v1/payments/{payment_id}"):
            assert (await raw(api, "GET", path, headers=bearer(old))).status_code == 404, path
            assert (await raw(api, "GET", path, headers=bearer(new))).status_code == 200, path


class TestShares:
    async def test_a_share_link_reads_one_model_writes_nothing_and_dies_when_revoked(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        made = await prompt(api, version_id, amount_images=1)
        prompt_id = made.json()["prompt_id"]
        created = await api.post(f"/api/v1/versions/{version_id}/shares", json={"label": "for my designer"})
        assert created.status_code == 201
        share = created.json()
        assert len(share["token"]) >= 32
        listed = (await api.get(f"/api/v1/versions/{version_id}/shares")).json()["shares"]
        assert [(s["share_id"], s["label"], s["token"]) for s in listed] == [
            (share["share_id"], "for my designer", None)
        ], "a share's token is shown once"

        reader = bearer(share["token"])
        for path in (
            f"/api/v1/versions/info/{version_id}",
            f"/api/v1/prompts/list/{version_id}",
            f"/api/v1/prompts/{prompt_id}",
        ):
            assert (await raw(api, "GET", path, headers=reader)).status_code == 200, path
        writes = [
            ("POST", f"/api/v1/prompts/create/{version_id}", {"json": {"prompt": "x", "amount_images": 1}}),
            ("POST", f"/api/v1/versions/{version_id}/shares", {}),
            ("GET", f"/api/v1/versions/{version_id}/shares", {}),
            ("DELETE", f"/api/v1/versions/{version_id}/shares/{share['share_id']}", {}),
            ("POST", "/api/v1/payments/create", {"json": {"plan_id": 2, "version_id": version_id}}),
        ]
        for method, path, kwargs in writes:
            refused = await raw(api, method, path, headers=reader, **kwargs)
            assert refused.status_code == 403, (method, path, refused.text)
            assert "share link" in refused.json()["message"]
        # Nor does it open the payment (its token is the owner's business).
        assert (await raw(api, "GET", f"/api/v1/payments/{payment_id}", headers=reader)).status_code == 404
        other_model = (await ready_model(api, temporal))[1]
        assert (
            await raw(api, "GET", f"/api/v1/versions/info/{other_model}", headers=reader)
        ).status_code == 404

        revoked = await api.delete(f"/api/v1/versions/{version_id}/shares/{share['share_id']}")
        assert revoked.status_code == 204
        assert (
            await raw(api, "GET", f"/api/v1/versions/info/{version_id}", headers=reader)
        ).status_code == 404
        assert (await api.get(f"/api/v1/versions/{version_id}/shares")).json()["shares"] == []
        again = await api.delete(f"/api/v1/versions/{version_id}/shares/{share['share_id']}")
        assert again.status_code == 404


class TestIdempotency:
    async def test_a_retried_prompt_answers_the_first_response_and_charges_once(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"prompt": "a retried prompt", "amount_images": 4}
        first = await api.post(f"/api/v1/prompts/create/{version_id}", json=body, headers=key)
        again = await api.post(f"/api/v1/prompts/create/{version_id}", json=body, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers.get("idempotent-replayed") == "true"
        assert (await api.get(f"/api/v1/versions/info/{version_id}")).json()["info"]["images_left"] == 96
        other = await api.post(
            f"/api/v1/prompts/create/{version_id}", json=body | {"amount_images": 1}, headers=key
        )
        assert other.status_code == 422
        assert key["Idempotency-Key"] in other.json()["message"]

    async def test_a_retry_after_the_journey_continued_as_new_is_still_charged_once(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id, version_id = await ready_model(api, temporal)
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"prompt": "kept across runs", "amount_images": 1}
        first = await api.post(f"/api/v1/prompts/create/{version_id}", json=body, headers=key)
        assert first.status_code == 201
        runs = (await wait_stage(temporal, payment_id, "ready")).runs
        # The test stack continues a journey as new every 3 prompts.
        for n in range(3):
            assert (await prompt(api, version_id, prompt=f"filler {n}")).status_code == 201
        await eventually(lambda: wait_stage(temporal, payment_id, "ready"), lambda s: s.runs > runs)
        # The API's own record of the first answer is lost (say, its database write failed): only the journey
        # can tell that this prompt was already served.
        async with db.begin() as conn:
            await conn.execute(text("DELETE FROM idempotent_requests"))
        retried = await api.post(f"/api/v1/prompts/create/{version_id}", json=body, headers=key)
        assert retried.status_code == 201, retried.text
        assert retried.json()["prompt_id"] == first.json()["prompt_id"]
        assert len(retried.json()["images"]) == 1
        info = (await api.get(f"/api/v1/versions/info/{version_id}")).json()["info"]
        assert info["images_left"] == 96, "four prompts of one image: the retry charged nothing"
        listed = (await api.get(f"/api/v1/prompts/list/{version_id}")).json()["prompts"]
        assert [p["prompt"] for p in listed].count(first.json()["prompt_text"]) == 1

    async def test_a_duplicate_while_the_first_runs_is_told_to_retry(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, replicate_knobs: httpx.AsyncClient
    ) -> None:
        _, version_id = await ready_model(api, temporal)
        await replicate_knobs.post("/_sandbox/config", json={"prediction_seconds": 3})
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"prompt": "slow one", "amount_images": 1}
        first = asyncio.create_task(api.post(f"/api/v1/prompts/create/{version_id}", json=body, headers=key))

        async def running() -> bool:
            async with db.connect() as conn:
                state = (await conn.execute(text("SELECT state FROM idempotent_requests"))).scalars().all()
            return state == ["running"]

        await eventually(running, bool)
        busy = await api.post(f"/api/v1/prompts/create/{version_id}", json=body, headers=key)
        assert busy.status_code == 409
        assert "still running" in busy.json()["message"]
        assert (await first).status_code == 201

    async def test_a_retried_checkout_is_the_same_checkout_with_the_same_token(
        self, api: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        first = await raw(api, "POST", "/api/v1/payments/create", json={"plan_id": 1}, headers=key)
        again = await raw(api, "POST", "/api/v1/payments/create", json={"plan_id": 1}, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        async with db.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM payments"))).scalar_one()
        assert count == 1
        stored = str(await payment_row(db, first.json()["payment_id"]))
        assert first.json()["access_token"] not in stored
        changed = await raw(
            api,
            "POST",
            "/api/v1/payments/create",
            json={"plan_id": 1, "promocode_id": "SPRING20"},
            headers=key,
        )
        assert changed.status_code == 422

    async def test_a_retried_upload_is_the_same_model(
        self, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        key = {"Idempotency-Key": str(uuid.uuid4())}
        photos = valid_photos(5)
        first = await api.post(
            f"/api/v1/versions/train/{payment_id}",
            params={"class": "mug"},
            files=as_files(photos),
            headers=key,
        )
        again = await api.post(
            f"/api/v1/versions/train/{payment_id}",
            params={"class": "mug"},
            files=as_files(photos),
            headers=key,
        )
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        other = await api.post(
            f"/api/v1/versions/train/{payment_id}",
            params={"class": "mug"},
            files=as_files(valid_photos(6)),
            headers=key,
        )
        assert other.status_code == 422


@pytest.fixture(scope="module")
def limited_api(stack: Stack) -> Iterator[str]:
    """A second API process on the same stack with small limits, behind a trusted proxy (127.0.0.1)."""
    port = free_port()
    env = dict(stack.api.env or {}) | {
        "ECOMDREAM_API_PORT": str(port),
        "ECOMDREAM_METRICS_PORT": "0",
        "ECOMDREAM_CHECKOUT_RATE_LIMIT": "3/minute",
        "ECOMDREAM_FAILED_TOKEN_RATE_LIMIT": "4/minute",
        "ECOMDREAM_UPLOADS_IN_FLIGHT": "1",
        "ECOMDREAM_TRUSTED_PROXIES": "127.0.0.1",
    }
    process = ManagedProcess(
        "api-limits",
        [sys.executable, "-m", "api"],
        log_path=stack.data_dir / "logs" / "api-limits.log",
        env=env,
        cwd=REPO_ROOT,
    )
    process.start()
    try:
        process.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
async def limited(limited_api: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the limited API; each test comes from addresses of its own (documentation ranges)."""
    async with httpx.AsyncClient(base_url=limited_api, timeout=60) as client:
        yield client


def forwarded_for(address: str) -> dict[str, str]:
    """As the trusted proxy tells the API who the client is."""
    return {"X-Forwarded-For": address}


def new_address() -> str:
    """A client address nobody else in the session uses (2001:db8::/32 is for documentation)."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


class SlowUpload:
    """An upload whose body never finishes: its request is in flight until the connection closes.

    A raw connection, because an HTTP client reads no answer before it has sent the whole body, and the
    test must see an answer that comes early (a refusal).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, base: httpx.URL, path: str, headers: dict[str, str]) -> SlowUpload:
        """Send the headers and the first bytes of a multipart body, and no more."""
        assert base.host is not None
        assert base.port is not None
        reader, writer = await asyncio.open_connection(base.host, base.port)
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {base.host}:{base.port}",
            "Content-Type: multipart/form-data; boundary=slow",
            "Transfer-Encoding: chunked",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        first = b"--slow\r\n"
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        return cls(reader, writer)

    async def answered(self) -> bool:
        """Whether the server already answered (refused) it."""
        try:
            return bool(await asyncio.wait_for(self.reader.read(1), timeout=0.05))
        except TimeoutError:
            return False

    def close(self) -> None:
        """Hang up: the server drops the upload and frees its slot."""
        self.writer.close()


class TestLimits:
    async def test_checkouts_past_the_limit_answer_429_while_public_reads_go_on(
        self, limited: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        client, neighbour = forwarded_for(new_address()), forwarded_for(new_address())
        for _ in range(3):
            assert (
                await limited.post("/api/v1/payments/create", json={"plan_id": 1}, headers=client)
            ).status_code == 201
        refused = await limited.post("/api/v1/payments/create", json={"plan_id": 1}, headers=client)
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 60
        assert refused.json()["code"] == 429
        assert (await limited.get("/api/v1/payments/plans/list", headers=client)).status_code == 200
        assert (await limited.get("/health", headers=client)).status_code == 200
        other = await limited.post("/api/v1/payments/create", json={"plan_id": 1}, headers=neighbour)
        assert other.status_code == 201, "another client behind the same proxy has its own limit"

    async def test_an_address_that_keeps_guessing_tokens_is_slowed_down(
        self, limited: httpx.AsyncClient, api: httpx.AsyncClient, db: AsyncEngine
    ) -> None:
        guesser = forwarded_for(new_address())
        own = await create_payment(api)
        for _ in range(4):
            wrong = await limited.get(
                f"/api/v1/payments/{own['payment_id']}", headers=guesser | bearer("x" * 43)
            )
            assert wrong.status_code == 404
        stopped = await limited.get(
            f"/api/v1/payments/{own['payment_id']}", headers=guesser | bearer(own["access_token"])
        )
        assert stopped.status_code == 429
        assert int(stopped.headers["retry-after"]) > 0
        owner = await limited.get(
            f"/api/v1/payments/{own['payment_id']}",
            headers=forwarded_for(new_address()) | bearer(own["access_token"]),
        )
        assert owner.status_code == 200, "other addresses are not slowed down"

    async def test_a_second_upload_in_flight_from_one_address_is_refused(
        self, limited: httpx.AsyncClient, api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
    ) -> None:
        payment_id = await paid_payment(api, temporal)
        address = new_address()
        auth = forwarded_for(address) | bearer(WALLET.token(payment_id))
        url = httpx.URL(str(limited.base_url))
        held = await SlowUpload.start(url, f"/api/v1/versions/train/{payment_id}?class=mug", auth)

        async def another_upload() -> httpx.Response:
            nonlocal held
            if await held.answered():
                # The slow upload came while another one held the slot, and was refused: start it again.
                held.close()
                held = await SlowUpload.start(url, f"/api/v1/versions/train/{payment_id}?class=mug", auth)
            # Four photos: while the slow upload does not hold its slot yet, this is refused as too few.
            return await limited.post(
                f"/api/v1/versions/train/{payment_id}",
                params={"class": "mug"},
                files=as_files(valid_photos(4)),
                headers=auth,
            )

        try:
            refused = await eventually(another_upload, lambda r: r.status_code == 429, within=30)
            assert int(refused.headers["retry-after"]) > 0
            assert "uploads in progress" in refused.json()["message"]
        finally:
            held.close()
        freed = await eventually(another_upload, lambda r: r.status_code != 429, within=30)
        assert freed.status_code == 400, "once the slow upload is gone, its slot is free again"
        after = await train(api, payment_id, as_files(valid_photos(5)))
        assert after.status_code == 201

    def test_forwarded_for_is_believed_only_from_a_trusted_proxy(self) -> None:
        from starlette.requests import Request

        from api.guards import Limits
        from ecomdream.config import Settings

        def address(peer: str, forwarded: str, proxies: str) -> str:
            scope = {
                "type": "http",
                "client": (peer, 1234),
                "headers": [(b"x-forwarded-for", forwarded.encode())],
            }
            return Limits(Settings(trusted_proxies=proxies)).address(Request(scope))

        assert address("198.51.100.9", "203.0.113.7", "") == "198.51.100.9"
        assert address("198.51.100.9", "203.0.113.7", "10.0.0.0/8") == "198.51.100.9"
        assert address("10.1.2.3", "203.0.113.7", "10.0.0.0/8") == "203.0.113.7"
        # A client cannot hide behind an address it sends itself: the first hop not ours is it.
        assert address("10.1.2.3", "1.2.3.4, 203.0.113.7, 10.9.9.9", "10.0.0.0/8") == "203.0.113.7"
