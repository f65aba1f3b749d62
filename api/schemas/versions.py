"""Training and model-status bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class TrainingStarted(BaseModel):
    """The photos were accepted and training was submitted."""

    code: int = 201
    message: str = "Training started"
    version_id: uuid.UUID


class PhotoErrorPublic(BaseModel):
    """Why one photo cannot be used."""

    file: str
    error: str


class PhotosRejectedPublic(BaseModel):
    """A bad request; when photos were judged unusable, every problem with them at once."""

    code: int = 400
    message: str
    errors: list[PhotoErrorPublic] = Field(
        default_factory=list, description="One entry per unusable photo (absent for other problems)"
    )


class ExtendedInfo(BaseModel):
    """The quota as the first version of the API reported it (kept for its clients)."""

    amount_images_generated: int
    feature_amount_images: int


class VersionInfo(BaseModel):
    """A ready model: its class and its image quota."""

    id: uuid.UUID
    class_: str = Field(serialization_alias="class", description="What the photos show (same as class_name)")
    class_name: str
    identifier: str = Field(description="The token that names the subject in prompts (same as trigger_token)")
    trigger_token: str
    created_at: datetime
    ready_at: datetime | None
    deleted_at: datetime | None = None
    feature_amount_images: int
    amount_images_generated: int
    images_left: int
    extended_info: ExtendedInfo


class VersionPublic(BaseModel):
    """Where a model is: validating, training (with progress), ready or failed."""

    code: int = 200
    status: Literal["validating", "training", "ready", "failed"]
    is_ready: bool
    progress: float | None
    time_training: str
    info: VersionInfo | None
    error: str | None


class ShareCreate(BaseModel):
    """A read-only link to a model's gallery."""

    label: str | None = Field(
        default=None, max_length=100, description="A note for the owner, e.g. who has it"
    )


class SharePublic(BaseModel):
    """A share link; `token` is shown once, when it is created."""

    share_id: uuid.UUID
    token: str | None = Field(default=None, description="Send as `Authorization: Bearer <token>`; shown once")
    label: str | None = None
    created_at: datetime


class SharesPublic(BaseModel):
    """The live share links of a model."""

    code: int = 200
    shares: list[SharePublic]
