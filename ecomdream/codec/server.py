"""The codec server (Temporal's remote codec protocol), so operators read payloads in the Web UI and the CLI.

`POST <prefix>/encode` and `POST <prefix>/decode` take and answer a `Payloads` protobuf as protobuf-JSON; only
the last path segment matters, so it can be mounted under any prefix. Callers send `X-Namespace` (checked)
and `Authorization: Bearer <operator token>`; browsers on the Web UI's origins get CORS, and with
`open_to_ui` need no token (a UI with no login of its own cannot send one).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from ecomdream.codec.encryption import EncryptionCodec

CodecStep = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


@dataclass(frozen=True)
class CodecServerConfig:
    """Who may call: the namespace served, the operator token, the Web UI's origins."""

    namespace: str
    token: str | None
    ui_origins: tuple[str, ...] = ()
    open_to_ui: bool = False


def create_codec_app(codec: EncryptionCodec, config: CodecServerConfig) -> FastAPI:
    """The ASGI app: `/health`, and encode/decode under any prefix."""
    app = FastAPI(title="ecomdream codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(config.ui_origins),
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
    )
    steps: dict[str, CodecStep] = {"encode": codec.encode, "decode": codec.decode}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/{prefix:path}")
    async def convert(prefix: str, request: Request) -> Response:
        step = steps.get(prefix.rstrip("/").rsplit("/", 1)[-1])
        if step is None:
            return _text(404, "POST .../encode or .../decode")
        refused = _refusal(request, config)
        if refused is not None:
            return refused
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
            converted = Payloads(payloads=await step(payloads.payloads))
        except (json_format.ParseError, ValueError) as error:
            return _text(400, str(error))
        return Response(json_format.MessageToJson(converted), media_type="application/json")

    return app


def _refusal(request: Request, config: CodecServerConfig) -> Response | None:
    """401 without the operator token (unless a trusted UI asks), 403 for another namespace."""
    from_ui = config.open_to_ui and request.headers.get("origin") in config.ui_origins
    if not from_ui and not _token_matches(request.headers.get("authorization", ""), config.token):
        return _text(401, "send Authorization: Bearer <codec server token>", {"WWW-Authenticate": "Bearer"})
    namespace = request.headers.get("x-namespace")
    if namespace != config.namespace:
        return _text(403, f"this codec server serves namespace {config.namespace!r}, not {namespace!r}")
    return None


def _token_matches(header: str, token: str | None) -> bool:
    scheme, _, given = header.partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message, status_code=status, media_type="text/plain", headers=headers)
