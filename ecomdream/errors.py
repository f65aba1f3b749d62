"""Domain errors: each carries the HTTP status the API renders it with and a customer-readable message."""

from __future__ import annotations

from typing import Any, ClassVar


class EcomdreamError(Exception):
    """Base of every expected failure; `message` is safe to show to a customer."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class BadRequest(EcomdreamError):
    """The request is malformed or names something that cannot be used."""

    status_code = 400


class PaymentRequired(EcomdreamError):
    """The action needs a completed payment or more quota."""

    status_code = 402


class Forbidden(EcomdreamError):
    """The action is not allowed for this payment or model."""

    status_code = 403


class NotFound(EcomdreamError):
    """The payment, model or prompt does not exist."""

    status_code = 404


class Conflict(EcomdreamError):
    """The resource is busy or in a state that does not allow the action yet."""

    status_code = 409


class Gone(EcomdreamError):
    """The resource existed but can no longer be used."""

    status_code = 410


class PayloadTooLarge(EcomdreamError):
    """An upload exceeds a size limit."""

    status_code = 413


class ServiceUnavailable(EcomdreamError):
    """A dependency (database, Temporal, storage, provider) does not answer right now."""

    status_code = 503


class UpstreamFailed(EcomdreamError):
    """A provider (Stripe, Replicate) failed in a way the customer cannot fix by retrying at once."""

    status_code = 502
