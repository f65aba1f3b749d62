"""Deletion bodies: the answer to a deletion request and the receipt."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

KEPT = (
    "The payments ledger (amounts, currency and dates) and the model's id, dates and image quota figures "
    "are kept for accounting; nothing the customer uploaded or generated is."
)


class DeletionAccepted(BaseModel):
    """The deletion was asked for: where to read its receipt (the same for every repeat)."""

    receipt_id: uuid.UUID
    status: Literal["running", "done"]
    status_url: str


class DeletedCounts(BaseModel):
    """What the deletion removed, per kind (0: there was none left)."""

    photos: int = Field(default=0, description="Uploaded photos still staged (they go when training ends)")
    training_zip: int = Field(default=0, description="The training set built from the photos")
    images: int = Field(default=0, description="Generated images, from our bucket")
    prompts: int = 0
    share_links: int = 0
    events: int = Field(default=0, description="Stored notifications about the model and its prompts")
    replicate_version: int = Field(default=0, description="The trained model version at Replicate")
    replicate_model: int = Field(default=0, description="The (then empty) model it was pushed to")


class DeletionPublic(BaseModel):
    """A deletion receipt: what was deleted, and when."""

    receipt_id: uuid.UUID
    version_id: uuid.UUID
    status: Literal["running", "done"]
    requested_at: datetime
    completed_at: datetime | None
    deleted: DeletedCounts
    kept: str = KEPT
