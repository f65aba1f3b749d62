"""Training a model from photos, and the model's status."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from api.deps import ReadSessionDep, StateDep
from api.schemas.versions import (
    ExtendedInfo,
    PhotosRejectedPublic,
    TrainingStarted,
    VersionInfo,
    VersionPublic,
)
from api.uploads import MB, UploadLimits, discard, parse_photos, stage_photos
from ecomdream.contracts.training import TrainRequest
from ecomdream.errors import EcomdreamError, InvalidRequest, NotAllowed, NotFound, Unavailable
from ecomdream.models import Version, VersionStatus
from ecomdream.repositories.payments import PaymentRepository, PlanRepository
from ecomdream.repositories.versions import VersionRepository

router = APIRouter(prefix="/api/v1/versions", tags=["versions"])

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
    responses={400: {"model": PhotosRejectedPublic}, 402: {}, 403: {}, 404: {}, 409: {}, 413: {}},
)
async def train_version(
    payment_id: uuid.UUID,
    request: Request,
    state: StateDep,
    class_: Annotated[str | None, Query(alias="class", max_length=200)] = None,
) -> TrainingStarted:
    """Upload 5-30 photos (multipart, field `images`); answers once they are checked and the model recorded."""
    class_name = _class_name(class_)
    await _initial_payment(state, payment_id)
    await state.journeys.check_can_train(payment_id)
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
    return TrainingStarted(version_id=accepted.version_id)


async def _initial_payment(state: StateDep, payment_id: uuid.UUID) -> None:
    """The payment exists and bought an initial plan (add-on packs do not train models)."""
    async with state.read_sessionmaker() as session:
        payment = await PaymentRepository(session).get(payment_id)
        if payment is None:
            raise NotFound("Invalid payment id")
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


@router.get("/info/{version_id}", response_model=VersionPublic)
async def version_info(version_id: uuid.UUID, session: ReadSessionDep) -> VersionPublic:
    """The model's status, training progress and, once ready, its image quota."""
    version = await VersionRepository(session).get(version_id)
    if version is None:
        raise NotFound("Invalid version id")
    return _public(version)
