"""Training a model from photos, and the model's status."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from api.access import Caller, CallerDep, not_deleted, payment_of, version_of
from api.deps import ReadSessionDep, StateDep
from api.errors import AUTH_RESPONSES, KEYED_RESPONSES, WRITE_RESPONSES
from api.guards import digest, new_token
from api.idempotency import Answer, Claim, idempotency_key, once, request_hash
from api.schemas.deletions import DeletionAccepted
from api.schemas.versions import (
    ExtendedInfo,
    PhotosRejectedPublic,
    ShareCreate,
    SharePublic,
    SharesPublic,
    TrainingStarted,
    VersionInfo,
    VersionPublic,
)
from api.uploads import MB, ParsedUpload, UploadLimits, discard, parse_photos, stage_photos
from ecomdream.contracts.training import TrainRequest
from ecomdream.db.session import transaction
from ecomdream.errors import EcomdreamError, InvalidRequest, NotAllowed, NotFound, Unavailable
from ecomdream.models import Version, VersionStatus
from ecomdream.repositories.access import AccessRepository
from ecomdream.repositories.events import DeletionRepository
from ecomdream.repositories.payments import PlanRepository

router = APIRouter(prefix="/api/v1/versions", tags=["versions"])
GONE_RESPONSE: dict[str, object] = {"description": "The owner deleted the model"}

# Upload ids of keyed requests derive from the key, so a retry that takes over is the same `train` update.
KEYED_UPLOADS = uuid.UUID("2b8e6f3a-51c4-4a8e-b1f7-9d0e3c5a7b62")
CLASS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 \-]{0,39}$")


def _class_name(value: str | None) -> str:
    name = " ".join((value or "").split())
    if not name:
        raise InvalidRequest("Provide class: what the photos show, e.g. `sneaker` or `woman`")
    if not CLASS_PATTERN.match(name):
        raise InvalidRequest("class must be 1-40 letters, digits, spaces or hyphens")
    return name


@router.post(
    "/train/{payment_id}",
    status_code=201,
    response_model=TrainingStarted,
    responses={
        **WRITE_RESPONSES,
        **KEYED_RESPONSES,
        400: {"model": PhotosRejectedPublic},
        402: {},
        403: {"description": "An add-on payment, or a share token"},
        413: {},
    },
)
async def train_version(
    payment_id: uuid.UUID,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    class_: Annotated[str | None, Query(alias="class", max_length=200)] = None,
) -> JSONResponse:
    """Upload 5-30 photos (multipart, field `images`); answers once they are checked and the model recorded."""
    class_name = _class_name(class_)
    await _initial_payment(state, caller, payment_id)
    async with state.limits.upload_slot(caller.address):
        if idempotency_key(request) is None:
            # Refuse before reading a large upload; a keyed retry is read first, for it may replay its answer.
            await state.journeys.check_can_train(payment_id)
        upload = await parse_photos(request, _limits(state))
        try:
            return await _train(state, caller, payment_id, class_name, request, upload)
        finally:
            await upload.close()


def _limits(state: StateDep) -> UploadLimits:
    settings = state.settings
    return UploadLimits(
        min_files=settings.upload_min_files,
        max_files=settings.upload_max_files,
        max_file_bytes=int(settings.upload_max_file_mb * MB),
        max_total_bytes=int(settings.upload_max_total_mb * MB),
    )


async def _train(
    state: StateDep,
    caller: Caller,
    payment_id: uuid.UUID,
    class_name: str,
    request: Request,
    upload: ParsedUpload,
) -> JSONResponse:
    key = idempotency_key(request)
    claim: Claim | None = None
    if key is not None:
        asked = request_hash("train", str(payment_id), class_name, await upload.fingerprint())
        claimed = await state.idempotency.claim(caller.token_digest, key, asked)
        if isinstance(claimed, JSONResponse):
            return claimed
        claim = claimed
        await state.journeys.check_can_train(payment_id)
    # A keyed upload's id derives from the key: a retry that takes over is the same `train` update.
    upload_id = uuid.uuid5(KEYED_UPLOADS, f"{caller.token_digest}:{key}") if key else uuid.uuid4()

    async def train() -> Answer:
        try:
            photos = await stage_photos(state.storage, payment_id, upload_id, upload)
        except BaseException:
            await discard(state.storage, payment_id, upload_id)
            raise
        settings = state.settings
        train = TrainRequest(
            upload_id=upload_id,
            class_name=class_name,
            photos=photos,
            expected_seconds=settings.training_expected_minutes * 60,
            poll_seconds=settings.training_poll_seconds,
            deadline_seconds=settings.training_deadline_minutes * 60,
            retry_window_seconds=settings.training_retry_window_minutes * 60,
        )
        try:
            accepted = await state.journeys.train(payment_id, train)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            # The journey may still take these photos: keep them, and say where the outcome will show.
            raise Unavailable(
                f"Your photos are still being checked. In a minute, GET /api/v1/payments/{payment_id} shows "
                "the version_id of your model once they are accepted; if it does not, upload again"
            ) from exc
        except EcomdreamError:
            # Refused, or the journey ended meanwhile: these photos will never be used.
            await discard(state.storage, payment_id, upload_id)
            raise
        return 201, TrainingStarted(version_id=accepted.version_id).model_dump(mode="json")

    return await once(state.idempotency, claim, train)


async def _initial_payment(state: StateDep, caller: Caller, payment_id: uuid.UUID) -> None:
    """The caller owns the payment, and it bought an initial plan (add-on packs do not train models)."""
    async with state.read_sessionmaker() as session:
        payment = await payment_of(session, caller, payment_id)
        plan = await PlanRepository(session).get(payment.plan_id)
    if plan is not None and not plan.is_init:
        raise NotAllowed("You can only train a model with an initial plan, not with an add-on pack")


def _duration(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def _public(version: Version) -> VersionPublic:
    end = version.ready_at or version.failed_at or datetime.now(UTC)
    ready = version.status == VersionStatus.READY
    info = None
    if ready:
        info = VersionInfo(
            id=version.id,
            class_=version.class_name,
            class_name=version.class_name,
            identifier=version.trigger_token,
            trigger_token=version.trigger_token,
            created_at=version.created_at,
            ready_at=version.ready_at,
            feature_amount_images=version.images_quota,
            amount_images_generated=version.images_generated,
            images_left=max(version.images_quota - version.images_generated, 0),
            extended_info=ExtendedInfo(
                amount_images_generated=version.images_generated, feature_amount_images=version.images_quota
            ),
        )
    return VersionPublic(
        status=version.status,  # type: ignore[arg-type]
        is_ready=ready,
        progress=version.progress,
        time_training=_duration(end - version.created_at),
        info=info,
        error=version.error if version.status == VersionStatus.FAILED else None,
    )


@router.get(
    "/info/{version_id}", response_model=VersionPublic, responses={**AUTH_RESPONSES, 410: GONE_RESPONSE}
)
async def version_info(version_id: uuid.UUID, session: ReadSessionDep, caller: CallerDep) -> VersionPublic:
    """The model's status, training progress and, once ready, its image quota (owner or share token)."""
    version, _ = await version_of(session, caller, version_id)
    return _public(not_deleted(version))


@router.delete(
    "/{version_id}",
    status_code=202,
    response_model=DeletionAccepted,
    responses={**WRITE_RESPONSES, **KEYED_RESPONSES},
)
async def delete_version(
    version_id: uuid.UUID, request: Request, state: StateDep, caller: CallerDep
) -> JSONResponse:
    """Delete the model and everything made for it: running work stops, then the photos, the training set,
    every generated image, the prompts, the share links and the trained model at Replicate are deleted.
    Only the payments ledger stays. Answers a receipt at once; repeating the request answers the same one.
    A model deleted before it was ready is refunded; a ready one is not.
    """
    async with state.read_sessionmaker() as session:
        version, access = await version_of(session, caller, version_id)
        caller.owner_only(access)
        receipt = await DeletionRepository(session).of_version(version_id)
    claim: Claim | None = None
    key = idempotency_key(request)
    if key is not None:
        claimed = await state.idempotency.claim(
            caller.token_digest, key, request_hash("delete", str(version_id))
        )
        if isinstance(claimed, JSONResponse):
            return claimed
        claim = claimed

    async def delete() -> Answer:
        if receipt is not None and receipt.state == "done":
            receipt_id, status = receipt.receipt_id, "done"
        else:
            started = await state.journeys.delete_version(version.id, version.payment_id)
            receipt_id, status = started.receipt_id, started.state
        accepted = DeletionAccepted(
            receipt_id=receipt_id,
            status="done" if status == "done" else "running",
            status_url=f"/api/v1/deletions/{receipt_id}",
        )
        return 202, accepted.model_dump(mode="json")

    return await once(state.idempotency, claim, delete)


@router.post("/{version_id}/shares", status_code=201, response_model=SharePublic, responses=WRITE_RESPONSES)
async def create_share(
    version_id: uuid.UUID, state: StateDep, caller: CallerDep, body: ShareCreate | None = None
) -> SharePublic:
    """A read-only link to this model's gallery: its `token` reads the model's info and prompts, nothing else."""
    async with transaction(state.sessionmaker) as session:
        version, access = await version_of(session, caller, version_id)
        caller.owner_only(access)
        not_deleted(version)
        token = new_token()
        share = await AccessRepository(session).add_share(
            version_id, digest(token), body.label if body else None
        )
    return SharePublic(share_id=share.id, token=token, label=share.label, created_at=share.created_at)


@router.get("/{version_id}/shares", response_model=SharesPublic, responses=WRITE_RESPONSES)
async def list_shares(version_id: uuid.UUID, session: ReadSessionDep, caller: CallerDep) -> SharesPublic:
    """The model's live share links (their tokens are never shown again)."""
    _, access = await version_of(session, caller, version_id)
    caller.owner_only(access)
    shares = await AccessRepository(session).shares(version_id)
    return SharesPublic(
        shares=[SharePublic(share_id=s.id, label=s.label, created_at=s.created_at) for s in shares]
    )


@router.delete("/{version_id}/shares/{share_id}", status_code=204, responses=WRITE_RESPONSES)
async def revoke_share(
    version_id: uuid.UUID, share_id: uuid.UUID, state: StateDep, caller: CallerDep
) -> Response:
    """Revoke a share link: its token stops working at once."""
    async with transaction(state.sessionmaker) as session:
        _, access = await version_of(session, caller, version_id)
        caller.owner_only(access)
        if not await AccessRepository(session).revoke_share(version_id, share_id, datetime.now(UTC)):
            raise NotFound("Invalid share id")
    return Response(status_code=204)
