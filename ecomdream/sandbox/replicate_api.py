"""The `/v1` routes of the Replicate sandbox, with Replicate's paths, status codes and JSON shapes."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ecomdream.sandbox.replicate_holds import endpoint_of
from ecomdream.sandbox.replicate_jobs import Engine
from ecomdream.sandbox.replicate_state import HARDWARE, JSON, ApiProblem, Job, JobKind, Store

PAGE_SIZE = 100
PREFER_WAIT = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
INVALID_VERSION = ApiProblem(
    422,
    "The specified version does not exist (or perhaps you don't have permission to use it?)",
    title="Invalid version",
)


def check_token(store: Store, authorization: str | None) -> None:
    """401 unless the header is `Bearer <token>` or `Token <token>` with the sandbox token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or token.strip() != store.settings.api_token:
        raise ApiProblem(401, "You did not pass a valid authentication token", title="Unauthenticated")


def build_router(store: Store, engine: Engine, route_class: type[APIRoute] = APIRoute) -> APIRouter:
    """All API routes; a shared dependency records, delays, authenticates and injects faults first."""

    async def gate(request: Request) -> None:
        endpoint = endpoint_of(request)
        store.record_request(endpoint)
        knobs = store.knobs
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)
        check_token(store, request.headers.get("authorization"))
        if knobs.error_rate and random.random() < knobs.error_rate:
            status = random.choice(knobs.error_status)
            with store.lock:
                store.faults[endpoint] += 1
            if status == 429:
                raise ApiProblem(
                    429,
                    "Request was throttled. Your rate limit resets in ~1s.",
                    headers={"Retry-After": "1"},
                )
            raise ApiProblem(status, f"sandbox: injected {status} fault")

    router = APIRouter(prefix="/v1", dependencies=[Depends(gate)], route_class=route_class)

    async def body_of(request: Request) -> JSON:
        try:
            body: Any = await request.json()
        except ValueError as exc:
            raise ApiProblem(400, f"Request body must be JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiProblem(400, "Request body must be a JSON object")
        return body

    def page(request: Request, items: list[JSON]) -> JSON:
        cursor = request.query_params.get("cursor", "0")
        offset = int(cursor) if cursor.isdigit() else 0
        url = f"{store.settings.base_url}{request.url.path}?cursor="
        return {
            "next": f"{url}{offset + PAGE_SIZE}" if offset + PAGE_SIZE < len(items) else None,
            "previous": f"{url}{max(0, offset - PAGE_SIZE)}" if offset > 0 else None,
            "results": items[offset : offset + PAGE_SIZE],
        }

    def created(job: Job) -> JSONResponse:
        return JSONResponse(store.snapshot(job), status_code=201)

    async def create_job(
        request: Request, kind: JobKind, model: str, version: str, body: JSON
    ) -> JSONResponse:
        if not isinstance(body.get("input"), dict):
            raise ApiProblem(422, "input is required and must be an object")
        with store.lock:
            store.create_requests[kind] += 1
        job = engine.create_job(kind, model, version, body)
        match = PREFER_WAIT.match(request.headers.get("prefer", ""))
        if kind == "prediction" and match:
            await engine.wait(job, min(60, int(match.group(1) or 60)))
        return created(job)

    @router.get("/account")
    async def account() -> JSON:
        """The account the token belongs to."""
        return {
            "type": "organization",
            "username": store.settings.account,
            "name": "Sandbox",
            "github_url": None,
        }

    @router.get("/hardware")
    async def hardware() -> list[JSON]:
        """Hardware SKUs accepted by `POST /v1/models`."""
        return [{"sku": sku, "name": name} for sku, name in HARDWARE.items()]

    @router.post("/models")
    async def create_model(request: Request) -> JSONResponse:
        """Create a (training destination) model; 409 when it exists."""
        return JSONResponse(store.create_model(await body_of(request)), status_code=201)

    @router.get("/models/{owner}/{name}")
    async def get_model(owner: str, name: str) -> JSON:
        """A model with its latest version."""
        return store.get_model(f"{owner}/{name}")

    @router.get("/models/{owner}/{name}/versions")
    async def list_versions(request: Request, owner: str, name: str) -> JSON:
        """A model's versions, newest first."""
        return page(request, store.get_versions(f"{owner}/{name}"))

    @router.get("/models/{owner}/{name}/versions/{version_id}")
    async def get_version(owner: str, name: str, version_id: str) -> JSON:
        """One version of a model."""
        for version in store.get_versions(f"{owner}/{name}"):
            if version["id"] == version_id:
                return version
        raise ApiProblem(404, "Not found.")

    @router.delete("/models/{owner}/{name}/versions/{version_id}")
    async def delete_version(owner: str, name: str, version_id: str) -> Response:
        """Delete a version, its predictions and their output files (204; 404 when unknown)."""
        store.delete_version(f"{owner}/{name}", version_id)
        return Response(status_code=204)

    @router.delete("/models/{owner}/{name}")
    async def delete_model(owner: str, name: str) -> Response:
        """Delete a private model without versions (204; 404 when unknown, 409 while it has versions)."""
        store.delete_model(f"{owner}/{name}")
        return Response(status_code=204)

    @router.post("/models/{owner}/{name}/versions/{version_id}/trainings")
    async def create_training(request: Request, owner: str, name: str, version_id: str) -> JSONResponse:
        """Start a training of trainer `owner/name:version_id` that pushes a version to `destination`."""
        # Any public trainer is accepted: the sandbox cannot know every trainer the real service hosts.
        body = await body_of(request)
        destination = body.get("destination")
        if not isinstance(destination, str) or not re.fullmatch(r"[^/\s]+/[^/\s]+", destination):
            raise ApiProblem(422, "destination is required, in the form owner/name")
        with store.lock:
            if destination not in store.models:
                raise ApiProblem(404, "The specified training destination does not exist")
        return await create_job(request, "training", f"{owner}/{name}", version_id, body)

    @router.get("/trainings")
    async def list_trainings(request: Request) -> JSON:
        """Trainings, newest first, 100 per page."""
        return page(request, [store.snapshot(job) for job in store.jobs_of("training")])

    @router.get("/trainings/{training_id}")
    async def get_training(training_id: str) -> JSON:
        """A training's current state."""
        return store.snapshot(store.job("training", training_id))

    @router.post("/trainings/{training_id}/cancel")
    async def cancel_training(training_id: str) -> JSON:
        """Cancel a training (terminal trainings are returned unchanged)."""
        job = store.job("training", training_id)
        engine.cancel(job)
        return store.snapshot(job)

    @router.post("/predictions")
    async def create_prediction(request: Request) -> JSONResponse:
        """Run a version (`<id>` or `owner/name:<id>`)."""
        body = await body_of(request)
        ref = body.get("version")
        resolved = store.resolve_version(ref) if isinstance(ref, str) and ref else None
        if resolved is None:
            raise INVALID_VERSION
        return await create_job(request, "prediction", resolved[0], resolved[1], body)

    @router.post("/models/{owner}/{name}/predictions")
    async def create_model_prediction(request: Request, owner: str, name: str) -> JSONResponse:
        """Run the latest version of a model."""
        body = await body_of(request)
        latest = store.get_model(f"{owner}/{name}")["latest_version"]
        if latest is None:
            raise ApiProblem(422, "This model has no versions yet", title="Invalid version")
        return await create_job(request, "prediction", f"{owner}/{name}", latest["id"], body)

    @router.get("/predictions")
    async def list_predictions(request: Request) -> JSON:
        """Predictions, newest first, 100 per page."""
        return page(request, [store.snapshot(job) for job in store.jobs_of("prediction")])

    @router.get("/predictions/{prediction_id}")
    async def get_prediction(prediction_id: str) -> JSON:
        """A prediction's current state."""
        return store.snapshot(store.job("prediction", prediction_id))

    @router.post("/predictions/{prediction_id}/cancel")
    async def cancel_prediction(prediction_id: str) -> JSON:
        """Cancel a prediction (terminal predictions are returned unchanged)."""
        job = store.job("prediction", prediction_id)
        engine.cancel(job)
        return store.snapshot(job)

    @router.get("/webhooks/default/secret")
    async def webhook_secret() -> JSON:
        """The signing secret of every webhook this account receives."""
        return {"key": store.webhook_secret}

    return router
