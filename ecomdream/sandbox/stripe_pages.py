"""The hosted checkout page of the Stripe sandbox: what a customer sees at the session's `url`."""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ecomdream.sandbox.stripe_core import SessionStateError, StripeAPIError
from ecomdream.sandbox.stripe_sessions import CheckoutSession
from ecomdream.sandbox.stripe_state import SandboxState

DEFAULT_EMAIL = "customer@example.com"

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f6f9fc;color:#1a1f36;margin:0}
main{max-width:440px;margin:48px auto;background:#fff;padding:32px;border-radius:8px;box-shadow:0 2px 8px #0002}
.row{display:flex;justify-content:space-between;margin:6px 0}.muted{color:#697386}.total{font-size:1.4em}
input{width:100%;padding:8px;margin:4px 0 16px;box-sizing:border-box}
button{width:100%;padding:12px;margin-top:8px;border:0;border-radius:6px;background:#635bff;color:#fff;font-size:1em}
button.secondary{background:#e3e8ee;color:#1a1f36}
"""


def html_page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """Wrap `body` (already escaped) in the sandbox's page layout."""
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main><p class=muted>ecomdream · Stripe sandbox (test mode)</p>"
        f"{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status)


def message_page(title: str, message: str, status: int) -> HTMLResponse:
    """A page with a heading and one sentence."""
    return html_page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>", status)


def build_pages_router(state: SandboxState) -> APIRouter:
    """`GET /pay/{id}` shows the checkout form; `POST /pay/{id}` pays it."""
    router = APIRouter()

    @router.get("/pay/{session_id}", response_class=HTMLResponse)
    async def checkout_page(session_id: str) -> HTMLResponse:
        """Render the checkout form for an open session."""
        try:
            session = state.session(session_id)
        except StripeAPIError:
            return message_page("Checkout not found", "This checkout link is not valid.", 404)
        if session.status == "expired":
            return message_page("Checkout expired", "This checkout session has expired.", 410)
        if session.status == "complete":
            return message_page(
                "Already paid", "Payment for this checkout session was already received.", 200
            )
        return html_page(f"Pay {session.money(session.amount_total)}", _checkout_form(session))

    @router.post("/pay/{session_id}", response_class=HTMLResponse)
    async def submit_payment(request: Request, session_id: str) -> HTMLResponse:
        """Complete the payment with the submitted email (`method=async` for a delayed payment)."""
        fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        email = fields.get("email", "").strip() or DEFAULT_EMAIL
        try:
            session = state.complete_session(session_id, email, delayed=fields.get("method") == "async")
        except SessionStateError as error:
            return message_page("Payment not possible", error.message, error.status)
        return html_page("Payment received", _receipt(session))

    return router


def _checkout_form(session: CheckoutSession) -> str:
    lines = "".join(
        f"<div class=row><span><strong>{escape(item.name)}</strong>"
        f"{'<br><span class=muted>' + escape(item.description) + '</span>' if item.description else ''}"
        f"<br><span class=muted>Qty {item.quantity}</span></span>"
        f"<span>{escape(session.money(item.amount))}</span></div>"
        for item in session.items
    )
    discount = ""
    if session.promotion is not None:
        discount = (
            f"<div class=row><span>Subtotal</span><span>{escape(session.money(session.amount_subtotal))}</span></div>"
            f"<div class=row><span>Discount ({escape(session.promotion.code)})</span>"
            f"<span>-{escape(session.money(session.amount_discount))}</span></div>"
        )
    total = escape(session.money(session.amount_total))
    email = escape(str(session.params.get("customer_email") or DEFAULT_EMAIL))
    cancel = session.params.get("cancel_url")
    back = f'<p><a href="{escape(str(cancel))}">Cancel and go back</a></p>' if cancel else ""
    return (
        f"<h1>Pay ecomdream</h1>{lines}{discount}"
        f'<div class="row total"><span>Total due</span><strong id="amount-total">{total}</strong></div>'
        f'<form method="post"><label for="email">Email</label>'
        f'<input id="email" type="email" name="email" value="{email}" required>'
        '<label for="card">Card (test)</label><input id="card" value="4242 4242 4242 4242" disabled>'
        f'<button type="submit" name="method" value="card">Pay {total}</button>'
        '<button class="secondary" type="submit" name="method" value="async">Pay by delayed bank debit</button>'
        f"</form>{back}"
    )


def _receipt(session: CheckoutSession) -> str:
    success_url = session.params.get("success_url")
    link = ""
    if success_url:
        target = str(success_url).replace("{CHECKOUT_SESSION_ID}", session.id)
        link = f'<p><a id="success-url" href="{escape(target)}">Return to the merchant</a></p>'
    status = "Your payment is processing." if session.payment_status == "unpaid" else "Thank you!"
    return (
        f"<h1>Payment received</h1><p>{status}</p>"
        f"<div class=row><span>Amount</span><strong>{escape(session.money(session.amount_total))}</strong></div>"
        f"<p class=muted>Session {escape(session.id)}</p>{link}"
    )
