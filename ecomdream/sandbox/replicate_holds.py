"""Held answers: a call to a held endpoint is performed, then its answer waits for a release.

After `POST /_sandbox/hold {"endpoint": "POST /v1/predictions"}` every later call to that endpoint is handled
as usual (a create creates its job, whose clock starts) and only its answer, success or problem, is kept back:
until `POST /_sandbox/release`, the client hanging up, the hold's `seconds` (300 by default) or the sandbox
stopping. `GET /_sandbox/holds` counts the answers waiting, so a test waits for "one call held" instead of
racing a time window: hold the create, see it held, kill the worker, and Replicate has a job the worker never
heard of. Endpoints are named like the request log's keys (`METHOD /route/{template}`): every `/v1` route and
`GET /files/{name}` (output downloads).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive

from ecomdream.sandbox.replicate_state import JSON, ApiProblem

log = logging.getLogger("ecomdream.sandbox.replicate")

# A safety net: a test that forgets its release delays each answer this long, not for ever.
MAX_HOLD_SECONDS = 300.0


class HoldRequest(BaseModel):
    """Body of `POST /_sandbox/hold`."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    seconds: float = Field(default=MAX_HOLD_SECONDS, gt=0, le=3600)


class ReleaseRequest(BaseModel):
    """Body of `POST /_sandbox/release`; without an endpoint every hold is released."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None


def endpoint_of(request: Request) -> str:
    """The request log's key for a call: method and route template (`POST /v1/predictions`)."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


@dataclass
class _Hold:
    seconds: float
    released: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0


async def _hung_up(receive: Receive) -> None:
    """Return once the client disconnects (the request body, if still unread, is skipped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Holds:
    """Which endpoints hold their answers and how many answers wait; used from the event loop only."""

    def __init__(self) -> None:
        self.endpoints: set[str] = set()
        self._held: dict[str, _Hold] = {}

    def hold(self, endpoint: str, seconds: float = MAX_HOLD_SECONDS) -> None:
        """Keep back every later answer of the endpoint (each at most `seconds`) until it is released."""
        self._known(endpoint)
        self._held.setdefault(endpoint, _Hold(seconds)).seconds = seconds

    def release(self, endpoint: str | None = None) -> None:
        """Send the answers held for the endpoint (all endpoints when None) and stop holding it."""
        if endpoint is not None:
            self._known(endpoint)
        for name in [endpoint] if endpoint else list(self._held):
            held = self._held.pop(name, None)
            if held is not None:
                held.released.set()

    def _known(self, endpoint: str) -> None:
        # A misspelt endpoint would hold nothing, and the test waiting for a held call would time out.
        if endpoint not in self.endpoints:
            known = ", ".join(sorted(self.endpoints))
            raise ApiProblem(422, f"unknown endpoint {endpoint!r}; one of: {known}")

    def describe(self) -> JSON:
        """Held endpoints with the number of answers each keeps back right now."""
        return {
            "endpoints": {
                name: {"waiting": held.waiting, "seconds": held.seconds} for name, held in self._held.items()
            }
        }

    async def keep(self, endpoint: str, receive: Receive) -> None:
        """Wait while the endpoint is held: until its release, the client hanging up, or the hold's time."""
        held = self._held.get(endpoint)
        if held is None:
            return
        held.waiting += 1
        waits = [asyncio.ensure_future(held.released.wait()), asyncio.ensure_future(_hung_up(receive))]
        try:
            done, _ = await asyncio.wait(waits, timeout=held.seconds, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                log.warning(
                    "an answer to %s was held %gs without a release; sent now", endpoint, held.seconds
                )
        finally:
            held.waiting -= 1
            for wait in waits:
                wait.cancel()


def held_route(holds: Holds) -> type[APIRoute]:
    """A route class whose endpoints can be held: the call is performed, then its answer waits."""

    class HeldRoute(APIRoute):
        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            super().__init__(path, endpoint, **kwargs)
            holds.endpoints.update(f"{method} {self.path}" for method in self.methods or ())

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            answer = super().get_route_handler()

            async def held_answer(request: Request) -> Response:
                try:
                    response = await answer(request)
                except Exception:
                    # An error answer (401, an injected fault, a 422) is held like any other.
                    await holds.keep(endpoint_of(request), request.receive)
                    raise
                await holds.keep(endpoint_of(request), request.receive)
                return response

            return held_answer

    return HeldRoute


class ReleasingServer(uvicorn.Server):
    """uvicorn, releasing every held answer when it stops (it waits for open requests before exiting)."""

    def __init__(self, config: uvicorn.Config, holds: Holds) -> None:
        super().__init__(config)
        self.holds = holds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Release, then stop as uvicorn does."""
        self.holds.release()
        await super().shutdown(sockets)
