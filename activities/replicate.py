"""Replicate activities: create, watch and cancel trainings and predictions, on the rate-limited Replicate
queues (creates on one, every other call on the other)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.version import Versions
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from ecomdream.clients.replicate import (
    ProviderBusy,
    delete_model,
    delete_model_version,
    is_transient,
    prediction_status,
    training_status,
)
from ecomdream.clients.storage import Storage
from ecomdream.contracts.deletion import Deleted, ReplicateDeletion
from ecomdream.contracts.prompt import PredictionCreate, PredictionPoll, PredictionStatus, PromptSpec
from ecomdream.contracts.training import TrainingCreate, TrainingPoll, TrainingStatus
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.repositories.prompts import PromptRepository
from ecomdream.repositories.versions import VersionRepository

ZIP_URL_LIFETIME = timedelta(hours=24)
# A lost create can only have happened after the activity was first scheduled; the margin covers clock skew.
LOOKUP_MARGIN = timedelta(minutes=10)
LOOKUP_MAX_PAGES = 50


@dataclass(frozen=True)
class TrainingSetup:
    """Where trained models go and how they are trained."""

    owner: str
    trainer: str
    trainer_version: str
    hardware: str
    steps: int
    webhook_base: str


def destination_name(version_id: object) -> str:
    """The Replicate model that receives one customer's trained weights (no personal data in it)."""
    return f"ecomdream-{version_id}"


def status_class(status: int | None) -> str:
    """A Replicate error's status as a metric label: `429` (throttled), `4xx`, `5xx` or `unknown`."""
    if status is None:
        return "unknown"
    return "429" if status == 429 else f"{status // 100}xx"


def _reraise(error: ReplicateError) -> NoReturn:
    """Let a transient error be retried (after Replicate's Retry-After, when it said one); turn a refusal
    into a non-retryable failure. Either way it is counted (worker metrics endpoint)."""
    activity.metric_meter().create_counter(
        "ecomdream_replicate_errors", "Replicate API errors that reached an activity, by status"
    ).add(1, {"status": status_class(error.status)})
    if isinstance(error, ProviderBusy) and error.retry_after is not None:
        raise ApplicationError(
            f"Replicate answered {error.status} ({error.detail or 'busy'}); again in {error.retry_after:g} s",
            type="ReplicateBusy",
            next_retry_delay=timedelta(seconds=error.retry_after),
        ) from error
    if is_transient(error):
        raise error
    raise ApplicationError(
        f"Replicate refused the request: {error.detail or error}",
        type="ReplicateRejected",
        non_retryable=True,
    ) from error


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _created(item: Any) -> datetime | None:
    try:
        return _utc(datetime.fromisoformat(item.created_at)) if item.created_at else None
    except (TypeError, ValueError):
        return None


async def created_since(
    list_page: Callable[[Any], Awaitable[Any]], since: datetime, max_pages: int = LOOKUP_MAX_PAGES
) -> AsyncGenerator[Any, None]:
    """Replicate's list (newest first), page after page, until it reaches items created before `since`."""
    cursor: Any = ...
    for _ in range(max_pages):
        try:
            page = await list_page(cursor)
        except ReplicateError as error:
            _reraise(error)
        for item in page.results:
            yield item
        oldest = _created(page.results[-1]) if page.results else None
        if page.next is None or (oldest is not None and oldest < since):
            return
        cursor = page.next
    # Not one lost create in this many pages: the caller creates anew, which may make a duplicate.
    activity.logger.warning("gave up looking for a lost create after %d pages of Replicate's list", max_pages)


def _first_scheduled() -> datetime:
    return _utc(activity.info().scheduled_time) - LOOKUP_MARGIN


class ReplicateActivities:
    """Activities that talk to Replicate (each call counts against the task queue's rate limit)."""

    def __init__(
        self, client: Client, storage: Storage, sessionmaker: SessionMaker, setup: TrainingSetup
    ) -> None:
        self.client = client
        self.storage = storage
        self.sessionmaker = sessionmaker
        self.setup = setup

    async def _stored_training(self, request: TrainingCreate) -> str | None:
        async with transaction(self.sessionmaker) as session:
            version = await VersionRepository(session).get(request.version_id)
            if version is not None and version.training_id:
                return version.training_id
        if activity.info().attempt == 1:
            return None
        # A previous attempt may have created the training and died before storing its id.
        listed = created_since(self.client.trainings.async_list, _first_scheduled())
        async with aclosing(listed):
            async for training in listed:
                images = str((training.input or {}).get("input_images", ""))
                if request.zip_key in images and training.status not in {"failed", "canceled"}:
                    return str(training.id)
        return None

    async def _ensure_destination(self, name: str) -> None:
        # One call in the usual case: each version gets a new model; 409 means a previous attempt made it.
        try:
            await self.client.models.async_create(
                owner=self.setup.owner, name=name, visibility="private", hardware=self.setup.hardware
            )
        except ReplicateError as error:
            if error.status != 409:
                _reraise(error)

    @activity.defn
    async def create_training(self, request: TrainingCreate) -> TrainingStatus:
        """Start the training (never two for one version: the stored id or Replicate's list is checked first)."""
        existing = await self._stored_training(request)
        if existing is None:
            name = destination_name(request.version_id)
            await self._ensure_destination(name)
            zip_url = await self.storage.presigned_get(request.zip_key, int(ZIP_URL_LIFETIME.total_seconds()))
            owner, model = self.setup.trainer.split("/", 1)
            try:
                training = await self.client.trainings.async_create(
                    model=f"{owner}/{model}",
                    version=self.setup.trainer_version,
                    input={
                        "input_images": zip_url,
                        "trigger_word": request.trigger_token,
                        "steps": self.setup.steps,
                        "autocaption": True,
                        "autocaption_prefix": f"a photo of {request.trigger_token} {request.class_name},",
                    },
                    destination=f"{self.setup.owner}/{name}",
                    webhook=f"{self.setup.webhook_base}?target={activity.info().workflow_id}",
                    # `logs` carry the training's progress (the API records it); `completed` its end.
                    webhook_events_filter=["logs", "completed"],
                )
            except ReplicateError as error:
                _reraise(error)
            existing = str(training.id)
        async with transaction(self.sessionmaker) as session:
            await VersionRepository(session).set_training(request.version_id, existing, request.zip_key)
        return TrainingStatus(training_id=existing, status="starting")

    @activity.defn
    async def poll_training(self, poll: TrainingPoll) -> TrainingStatus:
        """Look once (an overdue training); record progress; not finished yet → a benign error, retried."""
        try:
            training = await self.client.trainings.async_get(poll.training_id)
        except ReplicateError as error:
            _reraise(error)
        status = training_status(training)
        if status.progress is not None and not status.finished:
            async with transaction(self.sessionmaker) as session:
                await VersionRepository(session).set_progress(poll.version_id, status.progress)
        if not status.finished:
            raise ApplicationError(
                f"training {status.status}",
                type="TrainingNotFinished",
                category=ApplicationErrorCategory.BENIGN,
            )
        return status

    @activity.defn
    async def delete_trained_model(self, request: ReplicateDeletion) -> dict[str, int]:
        """Delete the trained version(s) and then the model they were pushed to (404: already gone).

        Every version of the destination is deleted, also one a training pushed after we stopped
        watching it; Replicate deletes a version's predictions and their files with it.
        """
        owner, name = self.setup.owner, destination_name(request.version_id)
        try:
            versions = [request.model_version] if request.model_version else []
            listed = await Versions(client=self.client, model=(owner, name)).async_list()
            versions += [f"{owner}/{name}:{v.id}" for v in listed.results]
            deleted = [
                await delete_model_version(self.client, version) for version in dict.fromkeys(versions)
            ]
            model = await delete_model(self.client, owner, name)
        except ReplicateError as error:
            if error.status != 404:
                _reraise(error)
            return {Deleted.REPLICATE_VERSION: 0, Deleted.REPLICATE_MODEL: 0}
        return {Deleted.REPLICATE_VERSION: sum(deleted), Deleted.REPLICATE_MODEL: int(model)}

    @activity.defn
    async def cancel_training(self, training_id: str) -> None:
        """Cancel a training at Replicate (a finished one is left as it is)."""
        try:
            await self.client.trainings.async_cancel(training_id)
        except ReplicateError as error:
            if error.status not in {404, 409, 422}:
                _reraise(error)


def prediction_input(spec: PromptSpec) -> dict[str, object]:
    """Everything the customer chose, sent to the model (the original stored these but never sent them)."""
    values: dict[str, object] = {
        "prompt": spec.prompt,
        "num_outputs": spec.num_outputs,
        "aspect_ratio": "custom",
        "width": spec.width,
        "height": spec.height,
        "seed": spec.seed,
        "output_format": "png",
        "negative_prompt": spec.negative_prompt,
        "guidance_scale": spec.guidance_scale,
        "num_inference_steps": spec.num_inference_steps,
    }
    return {key: value for key, value in values.items() if value is not None}


class PredictionActivities:
    """Activities that create and watch predictions on Replicate (on the rate-limited queue)."""

    def __init__(self, client: Client, sessionmaker: SessionMaker, webhook_base: str) -> None:
        self.client = client
        self.sessionmaker = sessionmaker
        self.webhook_base = webhook_base

    async def _existing(self, request: PredictionCreate) -> str | None:
        async with transaction(self.sessionmaker) as session:
            prompt = await PromptRepository(session).get(request.prompt_id)
            if prompt is not None and prompt.prediction_id:
                return prompt.prediction_id
        if activity.info().attempt == 1:
            # Nothing can have been created for this prompt before its first attempt.
            return None
        # A previous attempt may have created it and died before storing its id. Its webhook names this
        # prompt's workflow, but Replicate's list does not show webhooks: match the whole input, and never
        # take a prediction another prompt (the same text and seed regenerated) already owns.
        wanted = prediction_input(request.spec)
        version = request.model_version.split(":")[-1]
        listed = created_since(self.client.predictions.async_list, _first_scheduled())
        candidates = [
            str(prediction.id)
            async for prediction in listed
            if str(prediction.version).endswith(version)
            and all((prediction.input or {}).get(k) == v for k, v in wanted.items())
            and prediction.status not in {"failed", "canceled"}
        ]
        if not candidates:
            return None
        async with transaction(self.sessionmaker) as session:
            owned = await PromptRepository(session).owned_predictions(candidates)
        return next((c for c in candidates if c not in owned), None)

    @activity.defn
    async def create_prediction(self, request: PredictionCreate) -> PredictionStatus:
        """Create the prediction (one per prompt: the stored id or Replicate's list is checked first)."""
        existing = await self._existing(request)
        if existing is None:
            try:
                prediction = await self.client.predictions.async_create(
                    version=request.model_version.split(":")[-1],
                    input=prediction_input(request.spec),
                    webhook=f"{self.webhook_base}?target={activity.info().workflow_id}",
                    webhook_events_filter=["completed"],
                )
            except ReplicateError as error:
                _reraise(error)
            existing = str(prediction.id)
        async with transaction(self.sessionmaker) as session:
            await PromptRepository(session).set_prediction(request.prompt_id, existing)
        return PredictionStatus(prediction_id=existing, status="starting")

    @activity.defn
    async def poll_prediction(self, poll: PredictionPoll) -> PredictionStatus:
        """Look once (an overdue prediction); not finished yet → a benign error, retried."""
        try:
            prediction = await self.client.predictions.async_get(poll.prediction_id)
        except ReplicateError as error:
            _reraise(error)
        status = prediction_status(prediction)
        if not status.finished:
            raise ApplicationError(
                f"prediction {status.status}",
                type="PredictionNotFinished",
                category=ApplicationErrorCategory.BENIGN,
            )
        return status

    @activity.defn
    async def cancel_prediction(self, prediction_id: str) -> None:
        """Cancel a prediction at Replicate (a finished one is left as it is)."""
        try:
            await self.client.predictions.async_cancel(prediction_id)
        except ReplicateError as error:
            if error.status not in {404, 409, 422}:
                _reraise(error)
