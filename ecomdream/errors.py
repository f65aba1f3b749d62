"""Domain errors, named for what happened: each carries the HTTP status the API renders it with and a
message a customer understands."""

from __future__ import annotations

from typing import Any, ClassVar


class EcomdreamError(Exception):
    """Base of every expected failure; `message` is safe to show to a customer."""

    status_code: ClassVar[int] = 500

    def __init__(
        self, message: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


class InvalidRequest(EcomdreamError):
    """The request is malformed or names something that cannot be used."""

    status_code = 400


class PhotosRejected(InvalidRequest):
    """Some uploaded photos cannot be trained on (`extra["errors"]` lists every one)."""


class Unpaid(EcomdreamError):
    """The action needs a completed payment, or more images than the quota has left."""

    status_code = 402


class NotAuthenticated(EcomdreamError):
    """No usable access token was sent."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="ecomdream"'})


class NotAllowed(EcomdreamError):
    """The action is not allowed for this payment or model."""

    status_code = 403


class NotFound(EcomdreamError):
    """The payment, model or prompt does not exist (or is not the caller's)."""

    status_code = 404


class NotNow(EcomdreamError):
    """The resource is busy, or not in a state that allows the action (yet)."""

    status_code = 409


class NoLongerAvailable(EcomdreamError):
    """The resource existed but can no longer be used."""

    status_code = 410


class TooLarge(EcomdreamError):
    """An upload or a body exceeds a size limit."""

    status_code = 413


class TooManyRequests(EcomdreamError):
    """A limit of this client's was reached; `Retry-After` says when to try again."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(retry_after, 1))})


class ProviderFailed(EcomdreamError):
    """A provider (Stripe, Replicate) failed in a way the customer cannot fix by retrying at once."""

    status_code = 502


class Unavailable(EcomdreamError):
    """A dependency (database, Temporal, storage, provider) does not answer right now."""

    status_code = 503
