"""A dependency that is away answers 503 (retry later) in our error shape; a bug answers 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from fastapi import FastAPI
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.errors import UNAVAILABLE_MESSAGE, install_error_handlers


def _client_error(status: int, code: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")


RAISED: dict[str, BaseException] = {
    "pool": PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
    "s3-down": EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    "s3-503": _client_error(503, "ServiceUnavailable"),
    "s3-slowdown": _client_error(503, "SlowDown"),
    "stripe-connection": stripe.APIConnectionError("connection refused"),  # type: ignore[no-untyped-call]
    "stripe-rate": stripe.RateLimitError("too many requests"),
    "stripe-500": stripe.APIError("internal error"),
    "s3-denied": _client_error(403, "AccessDenied"),
    "s3-no-credentials": NoCredentialsError(),
    "bug": KeyError("plan"),
}


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise RAISED[name]

    return app


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("pool", 503),
        ("s3-down", 503),
        ("s3-503", 503),
        ("s3-slowdown", 503),
        ("stripe-connection", 503),
        ("stripe-rate", 503),
        ("stripe-500", 503),
        ("s3-denied", 500),
        ("s3-no-credentials", 500),
        ("bug", 500),
    ],
)
async def test_failures_map_to_503_when_retrying_helps(app: FastAPI, name: str, status: int) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(f"/raise/{name}")
    assert response.status_code == status
    message = UNAVAILABLE_MESSAGE if status == 503 else "Please try again later"
    assert response.json() == {"code": status, "message": message}
