"""The `/v1` routes of the Stripe sandbox: form-encoded requests in, Stripe-shaped JSON out."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ecomdream.sandbox.stripe_core import (
    JSON,
    SandboxConfig,
    StripeAPIError,
    decode_form,
    form_fingerprint,
    invalid,
    list_object,
    parse_bool,
    parse_limit,
    resource_missing,
)
from ecomdream.sandbox.stripe_sessions import CheckoutSession
from ecomdream.sandbox.stripe_state import SandboxState

_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
    "See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/."
)


def api_key_from(request: Request) -> str | None:
    """The secret key from `Authorization: Bearer sk_...` (or Basic `sk_...:`, which Stripe also accepts)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[0] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def check_api_key(key: str | None, config: SandboxConfig) -> None:
    """401 like Stripe for a missing or wrong key; without a configured key any test key passes."""
    if key is None:
        raise StripeAPIError(_NO_KEY, status=401)
    accepted = key == config.api_key if config.api_key else key.startswith(("sk_test_", "rk_test_"))
    if not accepted:
        raise StripeAPIError(f"Invalid API Key provided: {key[:8]}{'*' * 4}{key[-4:]}", status=401)


def build_api_router(state: SandboxState) -> APIRouter:
    """All `/v1` endpoints the sandbox implements, plus Stripe's 404 for the rest."""

    async def authenticate(request: Request) -> None:
        if state.config.unavailable:
            raise StripeAPIError(
                "An error occurred with our connection to Stripe. Request was retried 0 times.",
                status=503,
                type_="api_error",
            )
        check_api_key(api_key_from(request), state.config)

    router = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])
    _session_routes(router, state)
    _promotion_routes(router, state)
    _payment_routes(router, state)
    _event_routes(router, state)

    @router.api_route("/{rest:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
    async def unrecognized(request: Request, rest: str) -> JSONResponse:
        """Stripe's answer to a URL it does not serve."""
        raise StripeAPIError(
            f"Unrecognized request URL ({request.method}: /v1/{rest}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
            status=404,
        )

    return router


async def idempotent_post(request: Request, state: SandboxState, run: Callable[[JSON], JSON]) -> JSONResponse:
    """Decode the form body and run `run` under the request's Idempotency-Key."""
    raw = await _body_text(request)
    key = request.headers.get("Idempotency-Key")
    endpoint = f"{request.method} {request.url.path}"
    body, replayed = state.idempotent(key, endpoint, form_fingerprint(raw), lambda: run(decode_form(raw)))
    headers = {"Idempotency-Key": key} if key else {}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, headers=headers)


async def _body_text(request: Request) -> str:
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid("Request body must be UTF-8 form data.") from error


def _query(request: Request) -> JSON:
    return decode_form(request.url.query)


def _expand_list(params: JSON) -> list[str]:
    raw = params.get("expand", [])
    return [str(item) for item in raw] if isinstance(raw, list) else [str(raw)]


def _session_routes(router: APIRouter, state: SandboxState) -> None:
    def render(session: CheckoutSession, expand: list[str]) -> JSON:
        body = state.session_json(session)
        for path in expand:
            if path != "payment_intent":
                raise invalid(f"This property cannot be expanded ({path}).", param="expand")
            if session.payment_intent:
                body["payment_intent"] = state.intent(session.payment_intent).to_json()
        return body

    def create(params: JSON) -> JSON:
        expand = _expand_list(params)
        params.pop("expand", None)
        created = state.create_session(params)
        return render(state.session(created["id"]), expand)

    @router.post("/checkout/sessions")
    async def create_session(request: Request) -> JSONResponse:
        """Create a Checkout Session."""
        return await idempotent_post(request, state, create)

    @router.get("/checkout/sessions")
    async def list_sessions(request: Request) -> JSONResponse:
        """List sessions, newest first, optionally by payment_intent or status."""
        query = _query(request)
        with state.lock:
            sessions = list(reversed(state.sessions.values()))
        wanted = {key: query[key] for key in ("payment_intent", "status") if key in query}
        data = [
            state.session_json(s)
            for s in sessions
            if all(getattr(s, key) == value for key, value in wanted.items())
        ]
        return JSONResponse(list_object("/v1/checkout/sessions", data, parse_limit(query)))

    @router.get("/checkout/sessions/{session_id}")
    async def retrieve_session(request: Request, session_id: str) -> JSONResponse:
        """Retrieve a Checkout Session."""
        return JSONResponse(render(state.session(session_id), _expand_list(_query(request))))

    @router.post("/checkout/sessions/{session_id}/expire")
    async def expire_session(request: Request, session_id: str) -> JSONResponse:
        """Expire an open Checkout Session."""
        return await idempotent_post(request, state, lambda _params: state.expire_session(session_id))


def _promotion_routes(router: APIRouter, state: SandboxState) -> None:
    @router.get("/promotion_codes")
    async def list_promotion_codes(request: Request) -> JSONResponse:
        """List promotion codes; `code` matches case-insensitively like Stripe."""
        query = _query(request)
        expand = frozenset(_expand_list(query))
        code = query.get("code")
        active = parse_bool(query["active"], "active") if "active" in query else None
        with state.lock:
            data = [
                promotion.to_json(expand)
                for promotion in state.promotions.values()
                if (code is None or promotion.code.lower() == str(code).lower())
                and (active is None or promotion.active == active)
                and ("coupon" not in query or promotion.coupon_id == query["coupon"])
            ]
        return JSONResponse(list_object("/v1/promotion_codes", data, parse_limit(query)))

    @router.get("/promotion_codes/{promotion_id}")
    async def retrieve_promotion_code(request: Request, promotion_id: str) -> JSONResponse:
        """Retrieve a promotion code by its `promo_...` id."""
        with state.lock:
            promotion = state.promotions.get(promotion_id)
            if promotion is None:
                raise resource_missing("promotion_code", promotion_id)
            return JSONResponse(promotion.to_json(frozenset(_expand_list(_query(request)))))


def _payment_routes(router: APIRouter, state: SandboxState) -> None:
    @router.post("/refunds")
    async def create_refund(request: Request) -> JSONResponse:
        """Refund (part of) a paid PaymentIntent."""
        return await idempotent_post(request, state, state.create_refund)

    @router.get("/refunds")
    async def list_refunds(request: Request) -> JSONResponse:
        """List refunds, newest first, optionally by payment_intent or charge."""
        query = _query(request)
        with state.lock:
            data = [
                refund
                for refund in reversed(state.refunds)
                if all(refund[key] == query[key] for key in ("payment_intent", "charge") if key in query)
            ]
        return JSONResponse(list_object("/v1/refunds", data, parse_limit(query)))

    @router.get("/refunds/{refund_id}")
    async def retrieve_refund(refund_id: str) -> JSONResponse:
        """Retrieve a refund."""
        with state.lock:
            found = next((refund for refund in state.refunds if refund["id"] == refund_id), None)
        if found is None:
            raise resource_missing("refund", refund_id)
        return JSONResponse(found)

    @router.get("/payment_intents/{intent_id}")
    async def retrieve_payment_intent(intent_id: str) -> JSONResponse:
        """Retrieve the PaymentIntent of a paid session."""
        return JSONResponse(state.intent(intent_id).to_json())


def _event_routes(router: APIRouter, state: SandboxState) -> None:
    @router.get("/events")
    async def list_events(request: Request) -> JSONResponse:
        """List events, newest first, optionally by type."""
        query = _query(request)
        with state.lock:
            records = list(reversed(state.events.values()))
        data: list[Any] = [r.payload for r in records if query.get("type") in (None, r.payload["type"])]
        return JSONResponse(list_object("/v1/events", data, parse_limit(query)))

    @router.get("/events/{event_id}")
    async def retrieve_event(event_id: str) -> JSONResponse:
        """Retrieve an event."""
        return JSONResponse(state.event(event_id).payload)
