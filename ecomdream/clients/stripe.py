"""The official Stripe SDK, pointed at the real API or at the sandbox by one base-URL setting."""

from __future__ import annotations

from contextlib import AsyncExitStack

import stripe
from stripe.params.checkout import SessionCreateParams

from ecomdream.config import Settings


def create_stripe_client(settings: Settings, stack: AsyncExitStack | None = None) -> stripe.StripeClient:
    """A StripeClient with async httpx transport, retries, and the configured base URL.

    With `stack`, its connections are closed when the stack closes.
    """
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    http = stripe.HTTPXClient(allow_sync_methods=True)
    if stack is not None:
        stack.push_async_callback(http.close_async)
    return stripe.StripeClient(
        settings.stripe_key(),
        base_addresses=base,  # type: ignore[arg-type]
        http_client=http,
        max_network_retries=2,
    )


async def resolve_promotion_code(client: stripe.StripeClient, code: str, now: int) -> str | None:
    """The id of a usable promotion code given its id (`promo_…`) or its customer-facing code, else None."""
    code = code.strip()
    if not code:
        return None
    try:
        if code.startswith("promo_"):
            promo = await client.v1.promotion_codes.retrieve_async(code)
        else:
            found = await client.v1.promotion_codes.list_async(
                params={"code": code, "active": True, "limit": 1}
            )
            if not found.data:
                return None
            promo = found.data[0]
    except stripe.InvalidRequestError:
        return None
    usable = promo.active and (promo.expires_at is None or promo.expires_at > now)
    return promo.id if usable else None


async def create_checkout_session(
    client: stripe.StripeClient,
    *,
    payment_id: str,
    params: SessionCreateParams,
    promotion_code: str | None,
) -> tuple[stripe.checkout.Session, bool]:
    """Create the session (idempotent per payment); if Stripe refuses the discount, create it without one."""
    if promotion_code:
        try:
            session = await client.v1.checkout.sessions.create_async(
                params={**params, "discounts": [{"promotion_code": promotion_code}]},
                options={"idempotency_key": f"checkout-{payment_id}-promo"},
            )
            return session, True
        except stripe.InvalidRequestError:
            pass
    session = await client.v1.checkout.sessions.create_async(
        params=params,
        options={"idempotency_key": f"checkout-{payment_id}"},
    )
    return session, False
