"""The Stripe sandbox, driven over real HTTP by the official stripe SDK like production code drives Stripe."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
import stripe
from stripe.params import RefundCreateParams
from stripe.params.checkout import SessionCreateParams

from ecomdream.sandbox.stripe import SandboxConfig, create_app

SECRET = "whsec_test_c2FuZGJveCBzZWNyZXQ"
API_KEY = "sk_test_sandbox"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 15.0

T = TypeVar("T")

# stripe.HTTPXClient passes the form body as `data=<str>`, which httpx 0.28 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(probe: Callable[[], T | None], what: str, within: float = DEADLINE_SECONDS) -> T:
    """Poll `probe` until it returns something truthy, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


@dataclass
class Delivery:
    """One webhook POST as the receiver saw it."""

    body: str
    signature: str
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        """The decoded JSON body."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verified_event(self) -> stripe.Event:
        """The event as our webhook endpoint will see it after signature verification."""
        event: stripe.Event = stripe.Webhook.construct_event(self.body, self.signature, SECRET)
        return event


class WebhookReceiver:
    """A plain HTTP listener standing in for our webhook endpoint; can answer 500 on purpose."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self._failures: dict[str, int] = {}
        self._server = _ReceiverServer(("127.0.0.1", 0), _ReceiverHandler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where the sandbox should POST events."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/stripe/webhook"

    def fail_next(self, object_id: str, times: int = 1) -> None:
        """Answer 500 to the next `times` deliveries about `object_id`."""
        with self._lock:
            self._failures[object_id] = times

    def for_object(self, object_id: str, event_type: str | None = None) -> list[Delivery]:
        """Deliveries whose event is about `object_id` (optionally of one type), in arrival order."""
        with self._lock:
            return [
                d
                for d in self.deliveries
                if d.payload["data"]["object"]["id"] == object_id and event_type in (None, d.payload["type"])
            ]

    def at_least(self, count: int, object_id: str) -> list[Delivery] | None:
        """All deliveries about `object_id` once there are `count` of them, else None."""
        found = self.for_object(object_id)
        return found if len(found) >= count else None

    def record(self, body: str, signature: str) -> int:
        """Store a delivery and decide the HTTP status to answer."""
        object_id = json.loads(body)["data"]["object"]["id"]
        with self._lock:
            remaining = self._failures.get(object_id, 0)
            status = 500 if remaining else 200
            self._failures[object_id] = max(0, remaining - 1)
            self.deliveries.append(Delivery(body, signature, status))
        return status

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()


class _ReceiverServer(ThreadingHTTPServer):
    receiver: WebhookReceiver


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8")
        server = self.server
        assert isinstance(server, _ReceiverServer)
        status = server.receiver.record(body, self.headers.get("Stripe-Signature", ""))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@dataclass
class Sandbox:
    """A running sandbox subprocess."""

    base: str
    process: subprocess.Popen[bytes]

    def events(self, object_id: str) -> list[dict[str, Any]]:
        """The sandbox's own record of events about `object_id`."""
        response = httpx.get(f"{self.base}/_sandbox/events", params={"object_id": object_id})
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The webhook endpoint the sandbox delivers to."""
    listener = WebhookReceiver()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def sandbox(receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """`python -m ecomdream.sandbox.stripe` on a free port, ready once /health answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("stripe-sandbox") / "sandbox.log"
    command = [
        sys.executable, "-m", "ecomdream.sandbox.stripe", "--host", "127.0.0.1", "--port", str(port),
        "--webhook-url", receiver.url, "--webhook-secret", SECRET, "--public-url", base,
        "--api-key", API_KEY, "--retry-base-delay", "0.05", "--max-attempts", "5",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    try:
        _wait_healthy(base, process, log_path)
        yield Sandbox(base, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sandbox exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"sandbox not healthy within 30s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def client(sandbox: Sandbox) -> stripe.StripeClient:
    """Sync SDK client, configured exactly like production apart from the base address."""
    return stripe.StripeClient(API_KEY, base_addresses={"api": sandbox.base})


@pytest.fixture
async def aclient(sandbox: Sandbox) -> AsyncIterator[stripe.StripeClient]:
    """Async SDK client over httpx, as the activities use it."""
    http_client = stripe.HTTPXClient()
    yield stripe.StripeClient(API_KEY, base_addresses={"api": sandbox.base}, http_client=http_client)
    await http_client.close_async()  # type: ignore[no-untyped-call]  # stripe leaves it unannotated


@pytest.fixture
async def web() -> AsyncIterator[httpx.AsyncClient]:
    """A browser stand-in for the hosted checkout page."""
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def session_params(**overrides: Any) -> SessionCreateParams:
    """Checkout Session parameters shaped like the ones our payments activity sends."""
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 9900,
                    "product_data": {"name": "Starter plan", "description": "1 model, 100 images"},
                },
                "quantity": 1,
            }
        ],
        "client_reference_id": "pay_123",
        "metadata": {"payment_id": "pay_123"},
        "payment_intent_data": {"metadata": {"payment_id": "pay_123"}},
        "success_url": "https://shop.example/complete/pay_123?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.example/cancel",
        "expires_at": int(time.time()) + 3600,
    }
    params.update(overrides)
    return cast("SessionCreateParams", params)


async def paid_session(
    aclient: stripe.StripeClient, sandbox: Sandbox, **overrides: Any
) -> stripe.checkout.Session:
    """A session paid through the control endpoint (same effect as the hosted form)."""
    session = await aclient.v1.checkout.sessions.create_async(params=session_params(**overrides))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox.base}/_sandbox/sessions/{session.id}/pay", json={"email": "a@b.test"}
        )
    assert response.status_code == 200, response.text
    return await aclient.v1.checkout.sessions.retrieve_async(session.id)


def test_session_without_promotion_has_stripe_shape(client: stripe.StripeClient, sandbox: Sandbox) -> None:
    session = client.v1.checkout.sessions.create(params=session_params())

    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert session.url == f"{sandbox.base}/pay/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_subtotal, session.amount_total, session.currency) == (9900, 9900, "usd")
    assert session.total_details is not None
    assert session.total_details.amount_discount == 0
    assert session.client_reference_id == "pay_123"
    assert session.metadata is not None
    assert session.metadata["payment_id"] == "pay_123"
    assert session.payment_intent is None
    assert session.customer_details is None
    assert session.discounts == []
    assert session.livemode is False
    assert session.created <= session.expires_at - 3500


async def test_spring20_promotion_code_discounts_the_total(aclient: stripe.StripeClient) -> None:
    codes = await aclient.v1.promotion_codes.list_async(params={"code": "spring20", "active": True})
    assert [code.id for code in codes.data] == ["promo_spring20"]

    session = await aclient.v1.checkout.sessions.create_async(
        params=session_params(discounts=[{"promotion_code": codes.data[0].id}])
    )

    assert (session.amount_subtotal, session.amount_total) == (9900, 7920)
    assert session.total_details is not None
    assert session.total_details.amount_discount == 1980
    assert session.discounts is not None
    assert session.discounts[0].promotion_code == "promo_spring20"
    promotion = await aclient.v1.promotion_codes.retrieve_async("promo_spring20")
    assert (promotion.code, promotion.active) == ("SPRING20", True)


async def test_active_filter_hides_inactive_codes(aclient: stripe.StripeClient) -> None:
    active = await aclient.v1.promotion_codes.list_async(params={"code": "OLDCODE", "active": True})
    any_state = await aclient.v1.promotion_codes.list_async(params={"code": "oldcode"})

    assert active.data == []
    assert [(code.id, code.active) for code in any_state.data] == [("promo_oldcode", False)]


async def test_same_idempotency_key_returns_the_same_session(aclient: stripe.StripeClient) -> None:
    params = session_params(client_reference_id="pay_idem")
    key = f"checkout-{time.time_ns()}"

    first = await aclient.v1.checkout.sessions.create_async(params=params, options={"idempotency_key": key})
    second = await aclient.v1.checkout.sessions.create_async(params=params, options={"idempotency_key": key})

    assert first.id == second.id
    assert second.last_response is not None
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        await aclient.v1.checkout.sessions.create_async(
            params=session_params(client_reference_id="pay_other"),
            options={"idempotency_key": key},
        )


@pytest.mark.parametrize("promotion_id", ["promo_oldcode", "promo_expired10"])
async def test_unusable_promotion_code_is_rejected(aclient: stripe.StripeClient, promotion_id: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await aclient.v1.checkout.sessions.create_async(
            params=session_params(discounts=[{"promotion_code": promotion_id}])
        )

    assert raised.value.http_status == 400
    assert raised.value.param == "discounts[0][promotion_code]"


@pytest.mark.parametrize("seconds_from_now", [60, 25 * 3600])
async def test_expires_at_outside_30_minutes_to_24_hours_is_rejected(
    aclient: stripe.StripeClient, seconds_from_now: int
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await aclient.v1.checkout.sessions.create_async(
            params=session_params(expires_at=int(time.time()) + seconds_from_now)
        )

    assert raised.value.param == "expires_at"


async def test_unknown_session_is_resource_missing(aclient: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await aclient.v1.checkout.sessions.retrieve_async("cs_test_nope")

    assert (raised.value.http_status, raised.value.code, raised.value.param) == (
        404,
        "resource_missing",
        "id",
    )
    assert raised.value.user_message == "No such checkout.session: 'cs_test_nope'"


async def test_requests_need_the_secret_key(sandbox: Sandbox, web: httpx.AsyncClient) -> None:
    response = await web.post(f"{sandbox.base}/v1/checkout/sessions", data={"mode": "payment"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"

    wrong = stripe.StripeClient("sk_test_wrong", base_addresses={"api": sandbox.base})
    with pytest.raises(stripe.AuthenticationError):
        wrong.v1.checkout.sessions.retrieve("cs_test_any")


async def test_paying_on_hosted_page_delivers_a_verifiable_completed_event(
    aclient: stripe.StripeClient, sandbox: Sandbox, receiver: WebhookReceiver, web: httpx.AsyncClient
) -> None:
    session = await aclient.v1.checkout.sessions.create_async(
        params=session_params(discounts=[{"promotion_code": "promo_spring20"}])
    )
    assert session.url is not None

    page = await web.get(session.url)
    assert page.status_code == 200
    assert "$79.20" in page.text
    assert "customer@example.com" in page.text
    assert ">Pay" in page.text

    paid = await web.post(session.url, data={"email": "buyer@example.com"})
    assert paid.status_code == 200
    assert "Payment received" in paid.text
    assert f"https://shop.example/complete/pay_123?session={session.id}" in paid.text

    deliveries = await wait_for(
        lambda: receiver.for_object(session.id, "checkout.session.completed"), "delivery"
    )
    event = deliveries[0].verified_event()
    assert event.type == "checkout.session.completed"
    assert event.api_version == stripe.api_version
    completed = event.data.object
    assert (completed["status"], completed["payment_status"]) == ("complete", "paid")
    assert completed["payment_intent"].startswith("pi_")
    assert completed["amount_total"] == 7920
    assert completed["customer_details"]["email"] == "buyer@example.com"
    assert completed["client_reference_id"] == "pay_123"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(deliveries[0].body, deliveries[0].signature, "whsec_other")

    again = await web.post(session.url, data={"email": "buyer@example.com"})
    assert again.status_code == 409
    assert len(sandbox.events(session.id)) == 1
    retrieved = await aclient.v1.checkout.sessions.retrieve_async(session.id)
    assert (retrieved.status, retrieved.payment_intent) == ("complete", completed["payment_intent"])


async def test_free_order_needs_no_payment(
    aclient: stripe.StripeClient, sandbox: Sandbox, receiver: WebhookReceiver
) -> None:
    session = await paid_session(aclient, sandbox, discounts=[{"promotion_code": "promo_free100"}])

    assert (session.amount_total, session.payment_status, session.payment_intent) == (
        0,
        "no_payment_required",
        None,
    )
    deliveries = await wait_for(
        lambda: receiver.for_object(session.id, "checkout.session.completed"), "delivery"
    )
    completed = deliveries[0].verified_event().data.object
    assert completed["payment_status"] == "no_payment_required"
    assert completed["payment_intent"] is None


async def test_failed_delivery_is_retried(
    aclient: stripe.StripeClient, sandbox: Sandbox, receiver: WebhookReceiver, web: httpx.AsyncClient
) -> None:
    session = await aclient.v1.checkout.sessions.create_async(params=session_params())
    receiver.fail_next(session.id)

    await web.post(f"{sandbox.base}/_sandbox/sessions/{session.id}/pay", json={"email": "a@b.test"})

    deliveries = await wait_for(lambda: receiver.at_least(2, session.id), "redelivery")
    first, second = deliveries[0], deliveries[1]
    assert (first.answered, second.answered) == (500, 200)
    assert first.verified_event().id == second.verified_event().id
    record = await wait_for(
        lambda: [e for e in sandbox.events(session.id) if e["delivered"]], "delivered flag"
    )
    assert (record[0]["attempts"], record[0]["last_status"]) == (2, 200)


async def test_resend_delivers_the_same_event_again(
    aclient: stripe.StripeClient, sandbox: Sandbox, receiver: WebhookReceiver, web: httpx.AsyncClient
) -> None:
    session = await paid_session(aclient, sandbox)
    first = (await wait_for(lambda: receiver.for_object(session.id), "delivery"))[0]
    event_id = first.verified_event().id

    response = await web.post(f"{sandbox.base}/_sandbox/events/{event_id}/resend")
    assert response.status_code == 202

    deliveries = await wait_for(lambda: receiver.at_least(2, session.id), "duplicate delivery")
    assert deliveries[1].verified_event().id == event_id


async def test_expiring_a_session_emits_expired_and_blocks_payment(
    aclient: stripe.StripeClient, sandbox: Sandbox, receiver: WebhookReceiver, web: httpx.AsyncClient
) -> None:
    session = await aclient.v1.checkout.sessions.create_async(params=session_params())
    assert session.url is not None

    expired = await aclient.v1.checkout.sessions.expire_async(session.id)

    assert (expired.status, expired.url) == ("expired", None)
    deliveries = await wait_for(lambda: receiver.for_object(session.id), "expired event")
    assert deliveries[0].verified_event().type == "checkout.session.expired"
    payment = await web.post(session.url, data={"email": "late@example.com"})
    assert payment.status_code == 400
    assert [e["type"] for e in sandbox.events(session.id)] == ["checkout.session.expired"]
    with pytest.raises(stripe.InvalidRequestError):
        await aclient.v1.checkout.sessions.expire_async(session.id)


async def test_completed_session_cannot_be_expired(aclient: stripe.StripeClient, sandbox: Sandbox) -> None:
    session = await paid_session(aclient, sandbox)

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await aclient.v1.checkout.sessions.expire_async(session.id)

    assert raised.value.http_status == 400


async def test_refunds_are_idempotent_and_capped_at_the_charge(
    aclient: stripe.StripeClient, sandbox: Sandbox
) -> None:
    session = await paid_session(aclient, sandbox)
    intent = str(session.payment_intent)
    params: RefundCreateParams = {
        "payment_intent": intent,
        "amount": 4000,
        "metadata": {"reason": "training failed"},
    }
    key = f"refund-{intent}"

    first = await aclient.v1.refunds.create_async(params=params, options={"idempotency_key": key})
    replay = await aclient.v1.refunds.create_async(params=params, options={"idempotency_key": key})

    assert first.id == replay.id
    assert first.id.startswith("re_")
    assert (first.status, first.amount, first.payment_intent) == ("succeeded", 4000, intent)
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await aclient.v1.refunds.create_async(params={"payment_intent": intent, "amount": 6000})
    assert too_much.value.param == "amount"
    rest = await aclient.v1.refunds.create_async(params={"payment_intent": intent})
    assert rest.amount == 5900
    with pytest.raises(stripe.InvalidRequestError) as already:
        await aclient.v1.refunds.create_async(params={"payment_intent": intent})
    assert already.value.code == "charge_already_refunded"
    listed = await aclient.v1.refunds.list_async(params={"payment_intent": intent})
    assert sorted(refund.amount for refund in listed.data) == [4000, 5900]


async def test_delayed_payment_completes_unpaid_then_succeeds(
    aclient: stripe.StripeClient, sandbox: Sandbox, receiver: WebhookReceiver, web: httpx.AsyncClient
) -> None:
    session = await aclient.v1.checkout.sessions.create_async(params=session_params())
    assert session.url is not None

    await web.post(session.url, data={"email": "slow@example.com", "method": "async"})
    completed = await wait_for(
        lambda: receiver.for_object(session.id, "checkout.session.completed"), "completed"
    )
    assert completed[0].verified_event().data.object["payment_status"] == "unpaid"

    settled = await web.post(
        f"{sandbox.base}/_sandbox/sessions/{session.id}/async_result", data={"outcome": "succeeded"}
    )
    assert settled.status_code == 200

    succeeded = await wait_for(
        lambda: receiver.for_object(session.id, "checkout.session.async_payment_succeeded"), "async success"
    )
    assert succeeded[0].verified_event().data.object["payment_status"] == "paid"
    retrieved = await aclient.v1.checkout.sessions.retrieve_async(session.id)
    assert retrieved.payment_status == "paid"


async def test_embedded_app_config_and_reset() -> None:
    app = create_app(SandboxConfig(port=1, webhook_secret=SECRET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
            config = await http.post("/_sandbox/config", json={"webhook_url": "http://127.0.0.1:9/hook"})
            assert config.json()["webhook_url"] == "http://127.0.0.1:9/hook"
            created = await http.post(
                "/v1/checkout/sessions",
                headers={"Authorization": "Bearer sk_test_embedded"},
                content="mode=payment&line_items[0][price_data][currency]=eur&line_items[0][price_data][unit_amount]=500"
                "&line_items[0][price_data][product_data][name]=Pack&line_items[0][quantity]=2",
            )
            assert created.status_code == 200, created.text
            assert created.json()["amount_total"] == 1000

            assert (await http.post("/_sandbox/reset")).status_code == 200

            assert (await http.get("/_sandbox/sessions")).json()["data"] == []
            promo = await http.get(
                "/v1/promotion_codes/promo_free100", headers={"Authorization": "Bearer sk_test_x"}
            )
            assert promo.json()["coupon"]["percent_off"] == 100
