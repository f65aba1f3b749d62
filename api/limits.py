"""A size limit on every request body except the photo upload, which enforces its own while streaming."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

# Webhook events and JSON bodies are a few KB; 1 MiB leaves room and keeps a flood from filling memory.
MAX_BODY_BYTES = 1024 * 1024
# A finished training's webhook carries its whole log, which grows with the training steps.
LARGER = {"/api/v1/replicate/webhook": 16 * 1024 * 1024}
UPLOAD_PREFIX = "/api/v1/versions/train/"
TOO_LARGE = "The request body is too large (at most {} MB)"
# Reads: nothing to limit, and they pass untouched (they are most of the traffic).
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyLimit:
    """Refuse a body over the limit: at once when its length is declared, else as soon as it is crossed.

    Bodies under the limit are read here and handed to the route whole, so a route never sees a
    body it would have to abandon halfway.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODYLESS or scope["path"].startswith(UPLOAD_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = LARGER.get(scope["path"], self.max_bytes)
        too_large = error_response(413, TOO_LARGE.format(limit // (1024 * 1024)))
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
