"""Seeded coupons and promotion codes of the Stripe sandbox, and the discount arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ecomdream.sandbox.stripe_core import JSON, invalid

# A fixed past date keeps EXPIRED10 expired and its JSON stable across restarts.
_SEED_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z
_EXPIRED_AT = 1_738_368_000  # 2025-02-01T00:00:00Z


@dataclass
class Promotion:
    """A promotion code and the coupon behind it (one coupon per code in the sandbox)."""

    id: str
    code: str
    coupon_id: str
    name: str
    active: bool
    percent_off: float | None = None
    amount_off: int | None = None
    currency: str | None = None
    expires_at: int | None = None
    max_redemptions: int | None = None
    times_redeemed: int = 0

    def coupon(self) -> JSON:
        """The coupon object as Stripe renders it."""
        return {
            "id": self.coupon_id,
            "object": "coupon",
            "amount_off": self.amount_off,
            "created": _SEED_CREATED,
            "currency": self.currency,
            "duration": "once",
            "duration_in_months": None,
            "livemode": False,
            "max_redemptions": None,
            "metadata": {},
            "name": self.name,
            "percent_off": self.percent_off,
            "redeem_by": None,
            "times_redeemed": self.times_redeemed,
            "valid": True,
        }

    def to_json(self, expand: frozenset[str] = frozenset()) -> JSON:
        """The promotion_code object; `coupon` kept for older readers, `promotion` is the current API shape."""
        coupon = self.coupon()
        return {
            "id": self.id,
            "object": "promotion_code",
            "active": self.active,
            "code": self.code,
            "coupon": coupon,
            "promotion": {
                "type": "coupon",
                "coupon": coupon if "promotion.coupon" in expand else self.coupon_id,
            },
            "created": _SEED_CREATED,
            "customer": None,
            "expires_at": self.expires_at,
            "livemode": False,
            "max_redemptions": self.max_redemptions,
            "metadata": {},
            "restrictions": {
                "first_time_transaction": False,
                "minimum_amount": None,
                "minimum_amount_currency": None,
            },
            "times_redeemed": self.times_redeemed,
        }

    def check_redeemable(self, at: int, currency: str, param: str) -> None:
        """Raise the 400 Stripe gives when a session is created with an unusable code."""
        label = f"`{self.code}` ({self.id})"
        if not self.active:
            raise invalid(f"The promotion code {label} is inactive.", param=param)
        if self.expires_at is not None and self.expires_at <= at:
            raise invalid(f"The promotion code {label} has expired.", param=param)
        if self.max_redemptions is not None and self.times_redeemed >= self.max_redemptions:
            raise invalid(f"The promotion code {label} has reached its maximum redemptions.", param=param)
        if self.amount_off is not None and self.currency != currency:
            raise invalid(f"The promotion code {label} cannot be applied to {currency} amounts.", param=param)

    def discount_for(self, subtotal: int) -> int:
        """Discount in minor units; percentages round half up like Stripe."""
        if self.amount_off is not None:
            return min(self.amount_off, subtotal)
        percent = Decimal(str(self.percent_off or 0))
        raw = Decimal(subtotal) * percent / Decimal(100)
        return min(subtotal, int(raw.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def seed_promotions() -> dict[str, Promotion]:
    """Fresh copies of the seeded promotion codes, keyed by id."""
    seeds = [
        Promotion("promo_spring20", "SPRING20", "coupon_spring20", "Spring 20% off", True, percent_off=20.0),
        Promotion("promo_oldcode", "OLDCODE", "coupon_oldcode", "Old 50% off", False, percent_off=50.0),
        Promotion(
            "promo_expired10",
            "EXPIRED10",
            "coupon_expired10",
            "Expired 10% off",
            True,
            percent_off=10.0,
            expires_at=_EXPIRED_AT,
        ),
        Promotion("promo_free100", "FREE100", "coupon_free100", "Free (100% off)", True, percent_off=100.0),
    ]
    return {promotion.id: promotion for promotion in seeds}
