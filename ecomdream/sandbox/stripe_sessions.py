"""Checkout Session parameters (validated like Stripe) and the `checkout.session` object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ecomdream.sandbox.stripe_core import (
    JSON,
    MINIMUM_AMOUNTS,
    format_money,
    invalid,
    new_id,
    parse_bool,
    parse_int,
    parse_metadata,
    reject_unknown,
)
from ecomdream.sandbox.stripe_promotions import Promotion

MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60

_CREATE_PARAMS = frozenset(
    {
        "mode", "line_items", "client_reference_id", "metadata", "payment_intent_data", "success_url",
        "cancel_url", "expires_at", "discounts", "customer_email", "allow_promotion_codes", "expand",
        "payment_method_types", "consent_collection", "locale", "submit_type", "customer_creation", "ui_mode",
    }
)  # fmt: skip
_LINE_ITEM_PARAMS = frozenset({"price", "price_data", "quantity"})
_PRICE_DATA_PARAMS = frozenset({"currency", "unit_amount", "product_data", "tax_behavior"})
_PRODUCT_DATA_PARAMS = frozenset({"name", "description", "images", "metadata", "tax_code", "unit_label"})
_INTENT_DATA_PARAMS = frozenset({"metadata", "description", "receipt_email", "statement_descriptor"})


@dataclass
class LineItem:
    """One inline-priced line of a session."""

    name: str
    description: str | None
    currency: str
    unit_amount: int
    quantity: int

    @property
    def amount(self) -> int:
        """Line total before discounts."""
        return self.unit_amount * self.quantity


@dataclass
class CheckoutSession:
    """Mutable server-side state of one Checkout Session."""

    id: str
    created: int
    expires_at: int
    currency: str
    items: list[LineItem]
    promotion: Promotion | None
    amount_discount: int
    params: JSON
    status: str = "open"
    payment_status: str = "unpaid"
    payment_intent: str | None = None
    customer_details: JSON | None = None
    extras: JSON = field(default_factory=dict)

    @property
    def amount_subtotal(self) -> int:
        """Sum of the line items."""
        return sum(item.amount for item in self.items)

    @property
    def amount_total(self) -> int:
        """What the customer pays."""
        return self.amount_subtotal - self.amount_discount

    def money(self, amount: int) -> str:
        """Format an amount in the session's currency."""
        return format_money(amount, self.currency)

    def to_json(self, base_url: str) -> JSON:
        """The `checkout.session` object as the API returns it."""
        p = self.params
        return {
            "id": self.id,
            "object": "checkout.session",
            "allow_promotion_codes": p.get("allow_promotion_codes"),
            "amount_subtotal": self.amount_subtotal,
            "amount_total": self.amount_total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "client_secret": None,
            "consent": self.extras.get("consent"),
            "consent_collection": p.get("consent_collection"),
            "created": self.created,
            "currency": self.currency,
            "custom_fields": [],
            "customer": None,
            "customer_creation": p.get("customer_creation", "if_required"),
            "customer_details": self.customer_details,
            "customer_email": p.get("customer_email"),
            "discounts": self._discounts(),
            "expires_at": self.expires_at,
            "invoice": None,
            "livemode": False,
            "locale": p.get("locale"),
            "metadata": dict(p.get("metadata", {})),
            "mode": "payment",
            "payment_intent": self.payment_intent,
            "payment_link": None,
            "payment_method_types": list(p.get("payment_method_types", ["card"])),
            "payment_status": self.payment_status,
            "recovered_from": None,
            "setup_intent": None,
            "shipping_options": [],
            "status": self.status,
            "submit_type": p.get("submit_type"),
            "subscription": None,
            "success_url": p.get("success_url"),
            "total_details": {"amount_discount": self.amount_discount, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted_page",
            # Stripe only exposes the URL while the session can still be paid.
            "url": f"{base_url}/pay/{self.id}" if self.status == "open" else None,
        }

    def _discounts(self) -> list[JSON]:
        if self.promotion is None:
            return []
        return [{"coupon": self.promotion.coupon_id, "promotion_code": self.promotion.id}]


def build_session(params: JSON, promotions: dict[str, Promotion], at: int) -> CheckoutSession:
    """Validate create parameters like Stripe does and build an open session."""
    reject_unknown(params, _CREATE_PARAMS)
    mode = params.get("mode")
    if mode is None:
        raise invalid("Missing required param: mode.", param="mode")
    if mode != "payment":
        raise invalid(f"The Stripe sandbox only supports mode=payment, got {mode!r}.", param="mode")
    items = _line_items(params.get("line_items"))
    currency = items[0].currency
    if any(item.currency != currency for item in items):
        raise invalid("All line items must use the same currency.", param="line_items")
    promotion = _promotion(params, promotions, at, currency)
    clean = _clean_params(params)
    session = CheckoutSession(
        id=new_id("cs_test_", 58),
        created=at,
        expires_at=_expires_at(params.get("expires_at"), at),
        currency=currency,
        items=items,
        promotion=promotion,
        amount_discount=0,
        params=clean,
    )
    if promotion is not None:
        session.amount_discount = promotion.discount_for(session.amount_subtotal)
    _check_minimum(session)
    return session


def _line_items(raw: Any) -> list[LineItem]:
    if raw is None or raw == "":
        raise invalid("Missing required param: line_items.", param="line_items")
    if not isinstance(raw, list) or not raw:
        raise invalid("Invalid array", param="line_items")
    if len(raw) > 100:
        raise invalid("A Checkout Session can have at most 100 line items.", param="line_items")
    return [_line_item(item, f"line_items[{index}]") for index, item in enumerate(raw)]


def _line_item(raw: Any, param: str) -> LineItem:
    if not isinstance(raw, dict):
        raise invalid("Invalid object", param=param)
    reject_unknown(raw, _LINE_ITEM_PARAMS, param)
    if "price" in raw:
        raise invalid(f"No such price: '{raw['price']}'", param=f"{param}[price]", code="resource_missing")
    price_data = raw.get("price_data")
    if not isinstance(price_data, dict):
        raise invalid(f"You must specify either `price` or `price_data` in {param}.", param=param)
    reject_unknown(price_data, _PRICE_DATA_PARAMS, f"{param}[price_data]")
    product = price_data.get("product_data")
    if not isinstance(product, dict):
        raise invalid(f"Missing required param: {param}[price_data][product_data].", param=param)
    reject_unknown(product, _PRODUCT_DATA_PARAMS, f"{param}[price_data][product_data]")
    return LineItem(
        name=_required_str(product, "name", f"{param}[price_data][product_data]"),
        description=product.get("description") or None,
        currency=_required_str(price_data, "currency", f"{param}[price_data]").lower(),
        unit_amount=parse_int(price_data.get("unit_amount"), f"{param}[price_data][unit_amount]", minimum=0),
        quantity=parse_int(raw.get("quantity"), f"{param}[quantity]", minimum=1),
    )


def _required_str(container: JSON, key: str, prefix: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise invalid(f"Missing required param: {prefix}[{key}].", param=f"{prefix}[{key}]")
    return value


def _expires_at(raw: Any, at: int) -> int:
    if raw is None:
        return at + MAX_EXPIRY_SECONDS
    expires_at = parse_int(raw, "expires_at")
    if expires_at - at < MIN_EXPIRY_SECONDS:
        raise invalid(
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
            param="expires_at",
        )
    if expires_at - at > MAX_EXPIRY_SECONDS:
        raise invalid(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            param="expires_at",
        )
    return expires_at


def _promotion(params: JSON, promotions: dict[str, Promotion], at: int, currency: str) -> Promotion | None:
    discounts = params.get("discounts")
    if discounts in (None, ""):
        return None
    if "allow_promotion_codes" in params:
        raise invalid("You may only specify one of these parameters: allow_promotion_codes, discounts.")
    if not isinstance(discounts, list) or len(discounts) != 1 or not isinstance(discounts[0], dict):
        raise invalid("You may only specify one discount.", param="discounts")
    discount: JSON = discounts[0]
    reject_unknown(discount, frozenset({"promotion_code", "coupon"}), "discounts[0]")
    promotion = _find_promotion(discount, promotions)
    param = "discounts[0][promotion_code]" if "promotion_code" in discount else "discounts[0][coupon]"
    promotion.check_redeemable(at, currency, param)
    return promotion


def _find_promotion(discount: JSON, promotions: dict[str, Promotion]) -> Promotion:
    if "promotion_code" in discount:
        found = promotions.get(str(discount["promotion_code"]))
        if found is None:
            raise invalid(
                f"No such promotion code: '{discount['promotion_code']}'",
                param="discounts[0][promotion_code]",
                code="resource_missing",
            )
        return found
    for promotion in promotions.values():
        if promotion.coupon_id == discount.get("coupon"):
            return promotion
    raise invalid(
        f"No such coupon: '{discount.get('coupon')}'", param="discounts[0][coupon]", code="resource_missing"
    )


def _clean_params(params: JSON) -> JSON:
    clean: JSON = {"metadata": parse_metadata(params.get("metadata"))}
    for key in ("success_url", "cancel_url"):
        if key in params:
            clean[key] = _url(params[key], key)
    reference = params.get("client_reference_id")
    if reference:
        if not isinstance(reference, str) or len(reference) > 200:
            raise invalid(
                "client_reference_id must be a string of at most 200 characters.", "client_reference_id"
            )
        clean["client_reference_id"] = reference
    email = params.get("customer_email")
    if email:
        if not isinstance(email, str) or "@" not in email:
            raise invalid(f"Invalid email address: {email}", param="customer_email")
        clean["customer_email"] = email
    if "allow_promotion_codes" in params:
        clean["allow_promotion_codes"] = parse_bool(params["allow_promotion_codes"], "allow_promotion_codes")
    clean["payment_intent_data"] = _intent_data(params.get("payment_intent_data"))
    for key in ("payment_method_types", "consent_collection", "locale", "submit_type", "customer_creation"):
        if key in params:
            clean[key] = params[key]
    return clean


def _intent_data(raw: Any) -> JSON:
    if raw in (None, ""):
        return {"metadata": {}}
    if not isinstance(raw, dict):
        raise invalid("Invalid object", param="payment_intent_data")
    reject_unknown(raw, _INTENT_DATA_PARAMS, "payment_intent_data")
    data: JSON = dict(raw)
    data["metadata"] = parse_metadata(raw.get("metadata"), "payment_intent_data[metadata]")
    return data


def _url(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise invalid("Not a valid URL", param=param)
    return value


def _check_minimum(session: CheckoutSession) -> None:
    minimum = MINIMUM_AMOUNTS.get(session.currency)
    if minimum is not None and 0 < session.amount_total < minimum:
        raise invalid(
            "The Checkout Session's total amount due must add up to at least "
            f"{session.money(minimum)} {session.currency}",
        )
