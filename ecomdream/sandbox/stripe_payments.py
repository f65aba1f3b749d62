"""PaymentIntents and refunds of the Stripe sandbox (only what a paid Checkout Session creates)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ecomdream.sandbox.stripe_core import (
    JSON,
    StripeAPIError,
    format_money,
    invalid,
    new_id,
    parse_int,
    parse_metadata,
    reject_unknown,
)

_REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "metadata", "reason", "expand"})
_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


@dataclass
class PaymentIntent:
    """The intent (and its single charge) behind a paid session."""

    id: str
    charge_id: str
    amount: int
    currency: str
    created: int
    status: str
    metadata: dict[str, str]
    description: str | None
    session_id: str
    amount_refunded: int = 0
    refunds: list[JSON] = field(default_factory=list)

    def to_json(self) -> JSON:
        """The `payment_intent` object."""
        succeeded = self.status == "succeeded"
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": 0,
            "amount_received": self.amount if succeeded else 0,
            "capture_method": "automatic_async",
            "created": self.created,
            "currency": self.currency,
            "customer": None,
            "description": self.description,
            "latest_charge": self.charge_id if succeeded else None,
            "livemode": False,
            "metadata": dict(self.metadata),
            "payment_method_types": ["card"],
            "status": self.status,
        }


def build_refund(params: JSON, intents: dict[str, PaymentIntent], at: int) -> tuple[PaymentIntent, JSON]:
    """Validate a refund request like Stripe and build the `refund` object (not yet recorded)."""
    reject_unknown(params, _REFUND_PARAMS)
    intent = _target(params, intents)
    if intent.status != "succeeded":
        raise invalid(
            f"This PaymentIntent ({intent.id}) does not have a successful charge to refund.",
            param="payment_intent",
        )
    remaining = intent.amount - intent.amount_refunded
    if remaining <= 0:
        raise StripeAPIError(
            f"Charge {intent.charge_id} has already been refunded.", code="charge_already_refunded"
        )
    amount = remaining
    if params.get("amount") not in (None, ""):
        amount = parse_int(params["amount"], "amount", minimum=1)
    if amount > remaining:
        raise StripeAPIError(
            f"Refund amount ({format_money(amount, intent.currency)}) is greater than unrefunded amount "
            f"on charge ({format_money(remaining, intent.currency)})",
            param="amount",
            code="amount_too_large",
        )
    reason = params.get("reason") or None
    if reason is not None and reason not in _REASONS:
        raise invalid(f"Invalid reason: must be one of {', '.join(sorted(_REASONS))}", param="reason")
    refund: JSON = {
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn_"),
        "charge": intent.charge_id,
        "created": at,
        "currency": intent.currency,
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": parse_metadata(params.get("metadata")),
        "payment_intent": intent.id,
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }
    return intent, refund


def _target(params: JSON, intents: dict[str, PaymentIntent]) -> PaymentIntent:
    intent_id = params.get("payment_intent")
    charge_id = params.get("charge")
    if not intent_id and not charge_id:
        raise invalid(
            "One of the following params should be provided for this request: payment_intent or charge."
        )
    if intent_id:
        intent = intents.get(str(intent_id))
        if intent is None:
            raise invalid(
                f"No such payment_intent: '{intent_id}'", param="payment_intent", code="resource_missing"
            )
        return intent
    for intent in intents.values():
        if intent.charge_id == charge_id:
            return intent
    raise invalid(f"No such charge: '{charge_id}'", param="charge", code="resource_missing")
