"""Payment request and response bodies (the original's paths and JSON shapes)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PlanPublic(BaseModel):
    """A plan on sale."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    is_init: bool
    price: int = Field(description="Price in minor units (cents)")
    currency: str
    plan_name: str
    plan_description: str
    feature_amount_images: int


class PlansPublic(BaseModel):
    """Plans on sale, fewest images first."""

    code: int = 200
    plans: list[PlanPublic]


class PaymentCreate(BaseModel):
    """Buy a plan: an initial plan (train a model) or an add-on pack for an existing model."""

    model_config = ConfigDict(extra="ignore")

    # Strict: `true` or `"1"` is not a plan id; a client sending them has a bug we should show it.
    plan_id: int = Field(gt=0, lt=2**31, strict=True)
    promocode_id: str | None = Field(
        default=None, max_length=255, description="Promotion code id or the code"
    )
    version_id: uuid.UUID | None = Field(default=None, description="Required for add-on plans")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "Initial plans only: where the journey's events are POSTed, signed (Standard Webhooks). Live: "
            "https to a public address"
        ),
    )

    @field_validator("promocode_id", "version_id", "callback_url", mode="before")
    @classmethod
    def empty_is_absent(cls, value: object) -> object:
        """An empty string means 'not given' (the original confused the two fields here)."""
        return None if value == "" else value


class PaymentCreated(BaseModel):
    """Where to send the customer to pay."""

    code: int = 201
    payment_id: uuid.UUID
    url: str
    promocode_applied: bool
    amount_total: int
    currency: str
    access_token: str | None = Field(
        default=None,
        description=(
            "Initial plans only: the customer's key to this payment, its model and its images, sent as "
            "`Authorization: Bearer <access_token>`. Shown once; keep it secret"
        ),
    )
    webhook_secret: str | None = Field(
        default=None,
        description="With a `callback_url`: the secret callbacks are signed with (`whsec_...`). Shown once",
    )


class AccessTokenPublic(BaseModel):
    """A new access token (the previous one no longer works)."""

    code: int = 201
    access_token: str


class PaymentPublic(BaseModel):
    """A payment's status."""

    code: int = 200
    payment_id: uuid.UUID
    status: str
    plan_id: int
    amount_total: int
    amount_paid: int | None
    currency: str
    version_id: uuid.UUID | None
    callback_url: str | None = None


class CallbackUpdate(BaseModel):
    """Where the journey's events go from now on; `null` stops them."""

    callback_url: str | None = Field(max_length=2048)


class CallbackPublic(BaseModel):
    """The journey's callback URL (and its secret, the first time a URL is set)."""

    code: int = 200
    payment_id: uuid.UUID
    callback_url: str | None
    webhook_secret: str | None = Field(
        default=None, description="Only when this payment had no secret yet; shown once"
    )


class WebhookSecretPublic(BaseModel):
    """A new signing secret (the previous one no longer signs anything)."""

    code: int = 201
    payment_id: uuid.UUID
    webhook_secret: str


class WebhookAck(BaseModel):
    """Stripe only needs a 2xx."""

    received: bool = True
    duplicate: bool = False
