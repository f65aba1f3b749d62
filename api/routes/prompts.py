"""Generating images with a ready model, and listing what was generated."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError

from api.access import CallerDep, not_deleted, version_of
from api.deps import ReadSessionDep, StateDep
from api.errors import AUTH_RESPONSES, KEYED_RESPONSES, WRITE_RESPONSES
from api.idempotency import Answer, Claim, idempotency_key, once, request_hash
from api.journeys import PromptQueued, refused
from api.schemas.prompts import (
    ImagePublic,
    PromptAccepted,
    PromptCreate,
    PromptCreated,
    PromptOne,
    PromptPublic,
    PromptsPublic,
)
from api.state import AppState
from ecomdream.clients.storage import Storage
from ecomdream.contracts.prompt import PromptRequest, PromptSpec
from ecomdream.db.session import transaction
from ecomdream.errors import InvalidRequest, ProviderFailed
from ecomdream.models import Version
from ecomdream.repositories.prompts import PromptRepository
from ecomdream.repositories.versions import VersionRepository

log = logging.getLogger("ecomdream.api.prompts")
router = APIRouter(prefix="/api/v1/prompts", tags=["prompts"])
UNKNOWN_PROMPT = (
    "Unknown prompt id (a prompt answered 202 because it was queued shows here once generation starts; "
    "one that never does was not run and cost nothing)"
)
# Prompt ids of keyed requests derive from the key (see `create_prompt`).
KEYED_PROMPTS = uuid.UUID("c4a1e7d2-8b3f-4e6a-9c05-1f2d3b4a5e6c")


def with_trigger(version: Version, text: str) -> str:
    """Add the model's trigger token and class when the customer did not write them."""
    parts = []
    if not re.search(rf"\b{re.escape(version.trigger_token)}\b", text):
        parts.append(version.trigger_token)
    if not re.search(rf"\b{re.escape(version.class_name)}\b", text, flags=re.IGNORECASE):
        parts.append(version.class_name)
    return f"{' '.join(parts)}, {text}" if parts else text


async def _public(storage: Storage, row: dict[str, Any]) -> PromptPublic:
    images = []
    for image in row["images"]:
        url = await storage.public_url(image["key"])
        images.append(
            ImagePublic(
                url=url,
                cdn_url=url,
                width=image["width"],
                height=image["height"],
                created_at=image["created_at"],
            )
        )
    return PromptPublic(
        id=row["id"],
        prompt=row["prompt_text"],
        negative_prompt=row["negative_prompt"],
        num_outputs=row["amount_images"],
        status=row["status"],
        error=row["error"],
        width=row["width"],
        height=row["height"],
        seed=row["seed"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        images=images,
    )


QUEUED = "Your request is queued and will start shortly; its images will appear in the list when done"


@router.post(
    "/create/{version_id}",
    status_code=201,
    response_model=PromptCreated,
    responses={
        **WRITE_RESPONSES,
        **KEYED_RESPONSES,
        202: {"model": PromptAccepted},
        402: {},
        410: {},
        502: {},
    },
)
async def create_prompt(
    version_id: uuid.UUID, body: PromptCreate, request: Request, state: StateDep, caller: CallerDep
) -> JSONResponse:
    """Generate images; waits for them up to a limit, then answers 202 and the work continues."""
    async with state.read_sessionmaker() as session:
        version, access = await version_of(session, caller, version_id)
    caller.owner_only(access)
    not_deleted(version)
    key = idempotency_key(request)
    claim: Claim | None = None
    if key is not None:
        asked = request_hash("prompt", str(version_id), body.model_dump(mode="json"))
        claimed = await state.idempotency.claim(caller.token_digest, key, asked)
        if isinstance(claimed, JSONResponse):
            return claimed
        claim = claimed
    # A keyed prompt's id derives from the key: its update and its workflow are the same on every retry,
    # and the journey remembers recent prompts across runs, so a retry never generates (or charges) twice.
    prompt_id = uuid.uuid5(KEYED_PROMPTS, f"{caller.token_digest}:{key}") if key else uuid.uuid4()
    return await once(state.idempotency, claim, lambda: _generate(state, version, prompt_id, body))


async def _generate(state: AppState, version: Version, prompt_id: uuid.UUID, body: PromptCreate) -> Answer:
    settings = state.settings
    spec = PromptSpec(
        prompt=with_trigger(version, body.prompt),
        negative_prompt=body.negative_prompt,
        num_outputs=body.amount_images,
        width=body.width or 1024,
        height=body.height or 1024,
        # A seed per prompt also lets a retried activity find its own prediction at Replicate.
        seed=body.seed if body.seed is not None else int.from_bytes(prompt_id.bytes[:4], "big"),
        guidance_scale=body.guidance_scale,
        num_inference_steps=body.num_inference_steps,
    )
    request = PromptRequest(
        prompt_id=prompt_id,
        spec=spec,
        expected_seconds=settings.prompt_expected_seconds,
        poll_seconds=settings.prompt_poll_seconds,
        deadline_seconds=settings.prompt_deadline_seconds,
    )
    try:
        update = await state.journeys.start_prompt(
            version.payment_id, request, settings.prompt_accept_seconds
        )
    except PromptQueued:
        # Temporal holds the request and hands it to the journey when a worker is back; there is no
        # taking it back, so "retry" would generate (and charge) twice. Say where the result will be.
        return 202, PromptAccepted(prompt_id=prompt_id, message=QUEUED).model_dump(mode="json")
    try:
        async with asyncio.timeout(settings.prompt_wait_seconds):
            outcome = await update.result()
    except WorkflowUpdateFailedError as exc:
        # A validator's rejection surfaces here: the update was never accepted.
        raise refused(exc, "Image generation is unavailable right now, please retry") from exc
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # Accepted and still running: the images will appear in the list when done. The prompt's own
        # workflow records it too, but a busy worker may not have yet; the customer can look it up now.
        return await _still_running(state, prompt_id, version.id, spec)
    except Exception:
        # Accepted, so it runs and is charged whatever happens here: never tell the customer to retry.
        log.warning("lost sight of accepted prompt %s", prompt_id, exc_info=True)
        return await _still_running(state, prompt_id, version.id, spec)
    if outcome.status != "succeeded":
        raise ProviderFailed(f"{outcome.error or 'Generation failed'}. No images were charged to your quota.")
    try:
        async with transaction(state.sessionmaker) as session:
            row = await PromptRepository(session).one(prompt_id)
            version_now = await VersionRepository(session).get(version.id)
        assert row is not None
        assert version_now is not None
        public = await _public(state.storage, row)
    except Exception:
        log.warning("could not read finished prompt %s", prompt_id, exc_info=True)
        return await _still_running(state, prompt_id, version.id, spec)
    created = PromptCreated(
        prompt_id=prompt_id,
        images=[image.url for image in public.images],
        images_left=max(version_now.images_quota - version_now.images_generated, 0),
        prompt_text=spec.prompt,
        prompt_negative=spec.negative_prompt,
    )
    return 201, created.model_dump(mode="json")


async def _still_running(
    state: AppState, prompt_id: uuid.UUID, version_id: uuid.UUID, spec: PromptSpec
) -> Answer:
    """202 for an accepted prompt: its result will be in the list (recorded now when the database answers)."""
    try:
        async with transaction(state.sessionmaker) as session:
            await PromptRepository(session).start_spec(prompt_id, version_id, spec)
    except Exception:
        # The prompt's own workflow records it as soon as it runs.
        log.warning("could not record accepted prompt %s yet", prompt_id, exc_info=True)
    return 202, PromptAccepted(prompt_id=prompt_id).model_dump(mode="json")


def _encode_cursor(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{row['created_at']}|{row['id']}".encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        at, prompt_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        created_at = datetime.fromisoformat(at)
        if created_at.tzinfo is None:
            raise ValueError("cursor time without a zone")
        # Postgres compares in UTC: a time that falls outside years 1-9999 there is no cursor of ours.
        return created_at.astimezone(UTC), uuid.UUID(prompt_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("Invalid cursor; use the next_cursor of a previous page") from exc


@router.get("/list/{version_id}", response_model=PromptsPublic, responses={**AUTH_RESPONSES, 410: {}})
async def list_prompts(
    version_id: uuid.UUID,
    session: ReadSessionDep,
    state: StateDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PromptsPublic:
    """A model's prompts with their images, newest first, paginated by cursor (owner or share token)."""
    after = _decode_cursor(cursor)
    version, _ = await version_of(session, caller, version_id)
    not_deleted(version)
    rows = await PromptRepository(session).page(version_id, limit, after)
    if rows is None:
        raise await caller.not_found("Invalid version id")
    prompts = [await _public(state.storage, row) for row in rows]
    next_cursor = _encode_cursor(rows[-1]) if len(rows) == limit else None
    return PromptsPublic(prompts=prompts, next_cursor=next_cursor)


@router.get("/{prompt_id}", response_model=PromptOne, responses=AUTH_RESPONSES)
async def get_prompt(
    prompt_id: uuid.UUID, session: ReadSessionDep, state: StateDep, caller: CallerDep
) -> PromptOne:
    """One prompt with its status and images (owner or share token of its model)."""
    row = await PromptRepository(session).one(prompt_id)
    if row is None:
        raise await caller.not_found(UNKNOWN_PROMPT)
    version, _ = await version_of(session, caller, row["version_id"], unknown=UNKNOWN_PROMPT)
    not_deleted(version)
    return PromptOne(**(await _public(state.storage, row)).model_dump())
