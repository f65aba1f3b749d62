"""In-memory state of the Stripe sandbox: sessions, intents, refunds, events and idempotency records."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import stripe

from ecomdream.sandbox.stripe_core import (
    JSON,
    SandboxConfig,
    SessionStateError,
    StripeAPIError,
    invalid,
    new_id,
    now,
    resource_missing,
)
from ecomdream.sandbox.stripe_payments import PaymentIntent, build_refund
from ecomdream.sandbox.stripe_promotions import Promotion, seed_promotions
from ecomdream.sandbox.stripe_sessions import CheckoutSession, build_session

# Events carry the version the installed SDK is pinned to, as a Stripe account on that version would send.
API_VERSION: str = stripe.api_version


@dataclass
class DeliveryAttempt:
    """One POST of an event to the webhook endpoint."""

    attempt: int
    at: float
    url: str
    status: int | None
    error: str | None
    duration_ms: int


@dataclass
class EventRecord:
    """An event, its exact body (signed per attempt) and its delivery history."""

    payload: JSON
    body: str
    deliveries: list[DeliveryAttempt] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The `evt_...` id."""
        return str(self.payload["id"])

    def summary(self) -> JSON:
        """What `/_sandbox/events` shows for this event."""
        last = self.deliveries[-1] if self.deliveries else None
        return {
            "id": self.id,
            "type": self.payload["type"],
            "created": self.payload["created"],
            "object_id": self.payload["data"]["object"].get("id"),
            "attempts": len(self.deliveries),
            "delivered": any(d.status is not None and 200 <= d.status < 300 for d in self.deliveries),
            "last_status": last.status if last else None,
            "last_error": last.error if last else None,
            "deliveries": [vars(d) for d in self.deliveries],
            "event": self.payload,
        }


@dataclass
class _StoredResponse:
    endpoint: str
    fingerprint: list[tuple[str, str]]
    body: JSON


class SandboxState:
    """All sandbox data behind one re-entrant lock; every public method is atomic."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.on_event: Callable[[str], None] = lambda _event_id: None
        self.reset()

    def reset(self) -> None:
        """Forget everything except the seeded promotion codes (which start over unredeemed)."""
        with self.lock:
            self.sessions: dict[str, CheckoutSession] = {}
            self.intents: dict[str, PaymentIntent] = {}
            self.refunds: list[JSON] = []
            self.events: dict[str, EventRecord] = {}
            self.promotions: dict[str, Promotion] = seed_promotions()
            self._idempotency: dict[str, _StoredResponse] = {}

    def idempotent(
        self, key: str | None, endpoint: str, fingerprint: list[tuple[str, str]], run: Callable[[], JSON]
    ) -> tuple[JSON, bool]:
        """Run `run` once per Idempotency-Key; replays the stored body (flag True) for repeats."""
        if key is None:
            return run(), False
        if len(key) > 255:
            raise invalid("Idempotency keys can be at most 255 characters long.")
        with self.lock:
            stored = self._idempotency.get(key)
            if stored is not None:
                _check_same_request(stored, key, endpoint, fingerprint)
                return stored.body, True
            # Only successful results are stored: Stripe does not save requests that failed validation.
            body = run()
            self._idempotency[key] = _StoredResponse(endpoint, fingerprint, body)
            return body, False

    def session_json(self, session: CheckoutSession) -> JSON:
        """Serialise a session with the public base URL."""
        return session.to_json(self.config.base_url)

    def create_session(self, params: JSON) -> JSON:
        """POST /v1/checkout/sessions."""
        with self.lock:
            session = build_session(params, self.promotions, now())
            self.sessions[session.id] = session
            return self.session_json(session)

    def session(self, session_id: str) -> CheckoutSession:
        """A session by id (expired lazily if its time is up), or Stripe's 404."""
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None:
                raise resource_missing("checkout.session", session_id)
            self._expire_if_due(session, now())
            return session

    def expire_session(self, session_id: str) -> JSON:
        """POST /v1/checkout/sessions/{id}/expire."""
        with self.lock:
            session = self.session(session_id)
            if session.status != "open":
                raise invalid(
                    'Only Checkout Sessions with a status in ["open"] can be expired. '
                    f'This Checkout Session has a status of "{session.status}".'
                )
            self._expire(session)
            return self.session_json(session)

    def expire_due(self) -> None:
        """Expire every open session whose `expires_at` has passed, as Stripe does on its own."""
        with self.lock:
            at = now()
            for session in list(self.sessions.values()):
                self._expire_if_due(session, at)

    def complete_session(self, session_id: str, email: str, delayed: bool = False) -> CheckoutSession:
        """The customer submits the hosted page; `delayed` simulates a bank debit that settles later."""
        with self.lock:
            session = self._payable(session_id)
            if "@" not in email or len(email) > 512:
                raise SessionStateError("Enter a valid email address.", 400)
            session.status = "complete"
            session.customer_details = _customer_details(email)
            if session.params.get("consent_collection"):
                session.extras["consent"] = {"promotions": None, "terms_of_service": "accepted"}
            if session.amount_total == 0:
                session.payment_status = "no_payment_required"
            else:
                intent = self._new_intent(session, "processing" if delayed else "succeeded")
                session.payment_intent = intent.id
                session.payment_status = "unpaid" if delayed else "paid"
            if session.promotion is not None:
                session.promotion.times_redeemed += 1
            self.emit("checkout.session.completed", self.session_json(session))
            return session

    def settle_delayed_payment(self, session_id: str, outcome: str) -> CheckoutSession:
        """Finish a delayed payment with `succeeded` or `failed` and emit the matching async event."""
        if outcome not in ("succeeded", "failed"):
            raise SessionStateError("outcome must be 'succeeded' or 'failed'.", 400)
        with self.lock:
            session = self._known(session_id)
            intent = self.intents.get(session.payment_intent or "")
            if session.status != "complete" or intent is None or intent.status != "processing":
                raise SessionStateError("This Checkout Session has no pending delayed payment.", 409)
            intent.status = "succeeded" if outcome == "succeeded" else "requires_payment_method"
            if outcome == "succeeded":
                session.payment_status = "paid"
            self.emit(f"checkout.session.async_payment_{outcome}", self.session_json(session))
            return session

    def create_refund(self, params: JSON) -> JSON:
        """POST /v1/refunds."""
        with self.lock:
            intent, refund = build_refund(params, self.intents, now())
            intent.amount_refunded += refund["amount"]
            self.refunds.append(refund)
            return refund

    def intent(self, intent_id: str) -> PaymentIntent:
        """A PaymentIntent by id, or Stripe's 404."""
        with self.lock:
            intent = self.intents.get(intent_id)
            if intent is None:
                raise resource_missing("payment_intent", intent_id)
            return intent

    def emit(self, event_type: str, obj: JSON) -> EventRecord:
        """Record an event with a snapshot of `obj` and hand it to the webhook dispatcher."""
        payload: JSON = {
            "id": new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": now(),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1 if self.config.webhook_url else 0,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        # Stripe sends pretty-printed JSON; receivers must verify the raw bytes, not a re-serialisation.
        record = EventRecord(payload, json.dumps(payload, indent=2))
        with self.lock:
            self.events[record.id] = record
        self.on_event(record.id)
        return record

    def event(self, event_id: str) -> EventRecord:
        """An event by id, or Stripe's 404."""
        with self.lock:
            record = self.events.get(event_id)
            if record is None:
                raise resource_missing("event", event_id)
            return record

    def _known(self, session_id: str) -> CheckoutSession:
        try:
            return self.session(session_id)
        except StripeAPIError as error:
            raise SessionStateError(error.message, 404) from error

    def _payable(self, session_id: str) -> CheckoutSession:
        session = self._known(session_id)
        if session.status == "expired":
            raise SessionStateError("This Checkout Session has expired.", 400)
        if session.status == "complete":
            raise SessionStateError("This Checkout Session is already complete.", 409)
        return session

    def _new_intent(self, session: CheckoutSession, status: str) -> PaymentIntent:
        data = session.params.get("payment_intent_data", {})
        intent = PaymentIntent(
            id=new_id("pi_"),
            charge_id=new_id("ch_"),
            amount=session.amount_total,
            currency=session.currency,
            created=now(),
            status=status,
            metadata=dict(data.get("metadata", {})),
            description=data.get("description"),
            session_id=session.id,
        )
        self.intents[intent.id] = intent
        return intent

    def _expire_if_due(self, session: CheckoutSession, at: int) -> None:
        if session.status == "open" and session.expires_at <= at:
            self._expire(session)

    def _expire(self, session: CheckoutSession) -> None:
        session.status = "expired"
        self.emit("checkout.session.expired", self.session_json(session))


def _check_same_request(
    stored: _StoredResponse, key: str, endpoint: str, fingerprint: list[tuple[str, str]]
) -> None:
    advice = f"Try using a key other than '{key}' if you meant to execute a different request."
    if stored.endpoint != endpoint:
        raise StripeAPIError(
            "Keys for idempotent requests can only be used for the same endpoint they were first used for "
            f"('{stored.endpoint}' vs '{endpoint}'). {advice}",
            type_="idempotency_error",
        )
    if stored.fingerprint != fingerprint:
        raise StripeAPIError(
            f"Keys for idempotent requests can only be used with the same parameters they were first used with. {advice}",
            type_="idempotency_error",
        )


def _customer_details(email: str) -> JSON:
    return {
        "address": None,
        "email": email,
        "name": None,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
