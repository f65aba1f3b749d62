"""Training a model from photos, and the model's status."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ReadSessionDep, StateDep
from api.schemas.versions import (
    ExtendedInfo,
    PhotoErrorPublic,
    PhotosRejected,
    TrainingStarted,
    VersionInfo,
    VersionPublic,
)
from api.uploads import MB, UploadLimits, discard, parse_photos, stage_photos
from ecomdream.contracts import journey_id
from ecomdream.contracts.payment import JourneyStage
from ecomdream.contracts.training import TrainRequest
from ecomdream.errors import (
    BadRequest,
    Conflict,
    EcomdreamError,
    Forbidden,
    Gone,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
    UpstreamFailed,
)
from ecomdream.models import Version, VersionStatus
from ecomdream.repositories.payments import PaymentRepository, PlanRepository
from ecomdream.repositories.versions import VersionRepository
from workflows.journey import JourneyWorkflow

log = logging.getLogger("ecomdream.api.versions")
router = APIRouter(prefix="/api/v1/versions", tags=["versions"])

CLASS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 \-]{0,39}$")
TRAIN_TIMEOUT_S = 600
UPDATE_ERRORS: dict[str, type[EcomdreamError]] = {
    "NotPaid": PaymentRequired,
    "Busy": Conflict,
    "AlreadyTraining": Conflict,
    "PhotosUnchecked": ServiceUnavailable,
}


def _class_name(value: str | None) -> str:
    name = " ".join((value or "").split())
    if not name:
        raise BadRequest("Provide class: what the photos show, e.g. `sneaker` or `woman`")
    if not CLASS_PATTERN.match(name):
        raise BadRequest("class must be 1-40 letters, digits, spaces or hyphens")
    return name


async def _precheck(state: StateDep, payment_id: uuid.UUID) -> None:
    """Refuse before reading any upload when the payment cannot train now (the workflow re-checks atomically)."""
    async with state.sessionmaker() as session:
        payment = await PaymentRepository(session).get(payment_id)
        if payment is None:
            raise NotFound("Invalid payment id")
        plan = await PlanRepository(session).get(payment.plan_id)
    if plan is not None and not plan.is_init:
        raise Forbidden("You can only train a model with an initial plan, not with an add-on pack")
    try:
        journey = await state.temporal.get_workflow_handle_for(
            JourneyWorkflow.run, journey_id(payment_id)
        ).query(JourneyWorkflow.get_state)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Gone("This payment can no longer be used to train a model") from exc
        raise
    if journey.stage in (JourneyStage.AWAITING_PAYMENT, JourneyStage.EXPIRED, JourneyStage.PAYMENT_FAILED):
        raise PaymentRequired("You must pay to train model")
    if journey.stage is JourneyStage.VALIDATING:
        raise Conflict("Your photos are already being processed, please wait")
    if journey.stage is JourneyStage.FAILED:
        raise Conflict(
            "The training paid with this payment failed, so it cannot train another model; "
            "our team retries the training or refunds the payment"
        )
    if journey.stage is not JourneyStage.PAID:
        raise Conflict("You already have a model for this payment")


def _rejected(error: WorkflowUpdateFailedError) -> JSONResponse | EcomdreamError:
    cause = error.cause
    if not isinstance(cause, ApplicationError):
        return ServiceUnavailable("Training could not be started, please try again")
    if cause.type == "InvalidPhotos":
        problems = [PhotoErrorPublic.model_validate(p) for p in (cause.details[0] if cause.details else [])]
        body = PhotosRejected(message=cause.message, errors=problems)
        return JSONResponse(body.model_dump(), status_code=400)
    if cause.type == "TrainingNotStarted":
        return UpstreamFailed(cause.message)
    return UPDATE_ERRORS.get(cause.type or "", Conflict)(cause.message)


@router.post(
    "/train/{payment_id}",
    status_code=201,
    response_model=TrainingStarted,
    responses={400: {"model": PhotosRejected}, 402: {}, 403: {}, 404: {}, 409: {}, 413: {}},
)
async def train_version(
    payment_id: uuid.UUID,
    request: Request,
    state: StateDep,
    class_: Annotated[str | None, Query(alias="class", max_length=200)] = None,
) -> TrainingStarted | JSONResponse:
    """Upload 5-30 photos (multipart, field `images`) and start training; answers once training is submitted."""
    class_name = _class_name(class_)
    await _precheck(state, payment_id)
    settings = state.settings
    limits = UploadLimits(
        min_files=settings.upload_min_files,
        max_files=settings.upload_max_files,
        max_file_bytes=int(settings.upload_max_file_mb * MB),
        max_total_bytes=int(settings.upload_max_total_mb * MB),
    )
    upload = await parse_photos(request, limits)
    upload_id = uuid.uuid4()
    try:
        photos = await stage_photos(state.storage, payment_id, upload_id, upload)
    except BaseException:
        await discard(state.storage, payment_id, upload_id)
        raise
    finally:
        await upload.close()
    train = TrainRequest(
        upload_id=upload_id,
        class_name=class_name,
        photos=photos,
        poll_seconds=settings.training_poll_seconds,
        deadline_seconds=settings.training_deadline_minutes * 60,
        retry_window_seconds=settings.training_retry_window_minutes * 60,
    )
    handle = state.temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    try:
        async with asyncio.timeout(TRAIN_TIMEOUT_S):
            accepted = await handle.execute_update(JourneyWorkflow.train, train, id=str(upload_id))
    except WorkflowUpdateFailedError as exc:
        await discard(state.storage, payment_id, upload_id)
        outcome = _rejected(exc)
        if isinstance(outcome, JSONResponse):
            return outcome
        raise outcome from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            # The journey ended between the check above and now: these photos will never be used.
            await discard(state.storage, payment_id, upload_id)
            raise Gone("This payment can no longer be used to train a model") from exc
        raise
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
        # The journey may still take these photos: keep them, and say where the outcome will show.
        raise ServiceUnavailable(
            f"Your photos are still being checked. In a minute, GET /api/v1/payments/{payment_id} shows "
            "the version_id of your model once training has started; if it does not, upload again"
        ) from exc
    return TrainingStarted(version_id=accepted.version_id)


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


@router.get("/info/{version_id}", response_model=VersionPublic)
async def version_info(version_id: uuid.UUID, session: ReadSessionDep) -> VersionPublic:
    """The model's status, training progress and, once ready, its image quota."""
    version = await VersionRepository(session).get(version_id)
    if version is None:
        raise NotFound("Invalid version id")
    return _public(version)
