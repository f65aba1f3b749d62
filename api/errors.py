"""One place that turns every failure into `{"code": <status>, "message": "<text>"}`."""

from __future__ import annotations

import logging

import stripe
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as StorageConnectionError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from ecomdream.errors import EcomdreamError

log = logging.getLogger("ecomdream.api")

UNAVAILABLE_MESSAGE = "The service is temporarily unavailable, please retry in a moment"


class ErrorPublic(BaseModel):
    """Every error: the HTTP status again and a sentence for the customer."""

    code: int
    message: str


# Declared on the app so the OpenAPI document shows our error shape, not FastAPI's `detail` list.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    422: {"model": ErrorPublic, "description": "The request is malformed; the message names the field"}
}
# Customer routes: who is asking (declared per route, so the OpenAPI document shows them where they apply).
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorPublic, "description": "No access token (`Authorization: Bearer <access_token>`)"},
    404: {
        "model": ErrorPublic,
        "description": "Unknown id, or one the token does not open (the same answer)",
    },
    429: {"model": ErrorPublic, "description": "Too many wrong tokens from this address; see `Retry-After`"},
}
WRITE_RESPONSES: dict[int | str, dict[str, object]] = {
    **AUTH_RESPONSES,
    403: {"model": ErrorPublic, "description": "A share link only reads; writes need the owner's token"},
}
# Paid writes that take an `Idempotency-Key`.
KEYED_RESPONSES: dict[int | str, dict[str, object]] = {
    409: {
        "model": ErrorPublic,
        "description": "Busy, or a request with this Idempotency-Key is still running",
    },
    422: {
        "model": ErrorPublic,
        "description": "Malformed, or the Idempotency-Key was used for another request",
    },
    429: {"model": ErrorPublic, "description": "A limit of this address was reached; see `Retry-After`"},
}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    """The error body every endpoint uses."""
    return JSONResponse({"code": status, "message": message, **extra}, status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _validation_message(exc: RequestValidationError) -> str:
    messages = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            messages.append("The request body is not valid JSON")
            continue
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        messages.append(f"{_field(tuple(err.get('loc', ())))}: {msg}")
    return "; ".join(messages) or "The request is invalid"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on app."""

    @app.exception_handler(EcomdreamError)
    async def domain_error(_: Request, exc: EcomdreamError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint"
        return error_response(exc.status_code, message)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(OSError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(StorageConnectionError)
    @app.exception_handler(HTTPClientError)
    @app.exception_handler(stripe.APIConnectionError)
    @app.exception_handler(stripe.RateLimitError)
    @app.exception_handler(stripe.APIError)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %s", exc)
        return error_response(503, UNAVAILABLE_MESSAGE)

    @app.exception_handler(ClientError)
    async def storage_error(_: Request, exc: ClientError) -> JSONResponse:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or exc.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout"):
            log.warning("storage unavailable: %s", exc)
            return error_response(503, UNAVAILABLE_MESSAGE)
        log.exception("storage error", exc_info=exc)
        return error_response(500, "Please try again later")

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(503, UNAVAILABLE_MESSAGE)
        log.exception("database error", exc_info=exc)
        return error_response(500, "Please try again later")

    @app.exception_handler(RPCError)
    async def temporal_error(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return error_response(503, UNAVAILABLE_MESSAGE)
        log.exception("temporal error", exc_info=exc)
        return error_response(500, "Please try again later")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "Please try again later")
