"""Deletion and retention contracts: a customer's deletion of a model, and the daily retention run."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ecomdream.contracts.payment import Contract


class Deleted(StrEnum):
    """What a deletion removes, as the receipt counts it (stored in receipts: never rename)."""

    PHOTOS = "photos"
    TRAINING_ZIP = "training_zip"
    IMAGES = "images"
    PROMPTS = "prompts"
    SHARE_LINKS = "share_links"
    EVENTS = "events"
    REPLICATE_VERSION = "replicate_version"
    REPLICATE_MODEL = "replicate_model"


class DeletionInput(Contract):
    """Start input of a DeletionWorkflow: which model, asked by whom (its journey's payment), and when."""

    version_id: uuid.UUID
    payment_id: uuid.UUID
    requested_at: datetime


class DeletionStart(Contract):
    """Activity input: write the receipt (once per version) and hide the model from the API."""

    receipt_id: uuid.UUID
    version_id: uuid.UUID
    payment_id: uuid.UUID
    requested_at: datetime


class DeletionReceipt(Contract):
    """A receipt as the customer reads it; `deleted` counts what went, per `Deleted` kind."""

    receipt_id: uuid.UUID
    version_id: uuid.UUID
    payment_id: uuid.UUID
    state: str
    requested_at: datetime
    completed_at: datetime | None = None
    deleted: dict[str, int] = Field(default_factory=dict)
    # What the deletion still needs to know of the model (empty once it is scrubbed).
    model_version: str | None = None


class DeletionStep(Contract):
    """Activity input: one step of a deletion (it adds what it removed to the receipt)."""

    receipt_id: uuid.UUID
    version_id: uuid.UUID
    payment_id: uuid.UUID


class ReplicateDeletion(Contract):
    """Activity input: delete the trained version and its (then empty) destination model at Replicate."""

    version_id: uuid.UUID
    model_version: str | None


class DeletionFinish(Contract):
    """Activity input: scrub the model's row and close the receipt, adding these counts."""

    receipt_id: uuid.UUID
    version_id: uuid.UUID
    counts: dict[str, int] = Field(default_factory=dict)


class RetentionInput(Contract):
    """Start input of a RetentionWorkflow (from the schedule): how long things are kept, in days."""

    image_days: int = Field(ge=1)
    failed_upload_days: int = Field(ge=1)


class Expiry(Contract):
    """Activity input: delete what was made before `before`."""

    before: datetime


class RetentionResult(Contract):
    """What one retention run deleted."""

    images: int
    staged_photos: int
