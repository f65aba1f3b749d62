"""Training contracts: the train update, the activities that validate, zip and train, Replicate events."""

from __future__ import annotations

import uuid

from pydantic import Field

from ecomdream.contracts.payment import Contract


class StagedPhoto(Contract):
    """One uploaded photo, staged in S3 (the claim check: bytes never travel through Temporal)."""

    name: str = Field(max_length=255)
    key: str


class TrainRequest(Contract):
    """The `train` update: photos staged under one upload id, and the class of subject."""

    upload_id: uuid.UUID
    class_name: str = Field(min_length=1, max_length=40)
    photos: tuple[StagedPhoto, ...] = Field(min_length=1)
    expected_seconds: float = Field(
        default=1200.0, gt=0, description="How long a training usually takes: only its webhook is awaited"
    )
    poll_seconds: float = Field(
        default=120.0, gt=0, description="Once it is overdue: the longest gap between two polls"
    )
    deadline_seconds: float = Field(default=7200.0, gt=0)
    retry_window_seconds: float = Field(
        default=0.0,
        ge=0,
        description="How long a failed training waits for an operator's retry before the refund (0: none)",
    )


class TrainAccepted(Contract):
    """Training was submitted to Replicate."""

    version_id: uuid.UUID


class PhotoProblem(Contract):
    """Why one photo cannot be used, in words a customer understands."""

    file: str
    error: str


class PhotoCheck(Contract):
    """Activity input: check every staged photo."""

    photos: tuple[StagedPhoto, ...]


class PhotoCheckResult(Contract):
    """Every problem found (empty when all photos are usable)."""

    problems: tuple[PhotoProblem, ...] = ()


class VersionCreate(Contract):
    """Activity input: record a new version row for a payment."""

    version_id: uuid.UUID
    payment_id: uuid.UUID
    class_name: str
    trigger_token: str
    images_count: int
    images_quota: int


class ZipRequest(Contract):
    """Activity input: normalise the staged photos into the training zip."""

    version_id: uuid.UUID
    photos: tuple[StagedPhoto, ...]


class ZipResult(Contract):
    """Where the training zip is and what it holds."""

    key: str
    size: int
    images: int


class TrainingCreate(Contract):
    """Activity input: start the Replicate training (idempotent per version)."""

    version_id: uuid.UUID
    zip_key: str
    class_name: str
    trigger_token: str


class TrainingStatus(Contract):
    """A training's state as Replicate reports it (by webhook or by polling)."""

    training_id: str
    status: str
    model_version: str | None = None
    error: str | None = None
    progress: float | None = None

    @property
    def finished(self) -> bool:
        """Whether Replicate will not change it any more."""
        return self.status in {"succeeded", "failed", "canceled"}


class TrainingEvent(Contract):
    """A verified Replicate webhook about a training, deduplicated by its webhook id."""

    webhook_id: str
    training: TrainingStatus


class TrainingPoll(Contract):
    """Activity input: look at a training once; not finished → retried after the next poll gap."""

    version_id: uuid.UUID
    training_id: str


class VersionOutcome(Contract):
    """Activity input: record how a training ended."""

    version_id: uuid.UUID
    status: str
    model_version: str | None = None
    error: str | None = None


class Cleanup(Contract):
    """Activity input: delete S3 objects under these prefixes (idempotent)."""

    prefixes: tuple[str, ...]
