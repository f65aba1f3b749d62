"""Deletion receipts: what a customer's deletion of a model removed, and when."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.access import CallerDep
from api.deps import ReadSessionDep
from api.errors import AUTH_RESPONSES
from api.guards import matches
from api.schemas.deletions import DeletedCounts, DeletionPublic
from ecomdream.models import Deletion
from ecomdream.repositories.events import DeletionRepository
from ecomdream.repositories.payments import PaymentRepository

router = APIRouter(prefix="/api/v1/deletions", tags=["versions"])


def deletion_public(receipt: Deletion) -> DeletionPublic:
    """The receipt as the customer reads it."""
    counts = {kind: int(str(count)) for kind, count in receipt.deleted.items()}
    return DeletionPublic(
        receipt_id=receipt.receipt_id,
        version_id=receipt.version_id,
        status="done" if receipt.state == "done" else "running",
        requested_at=receipt.requested_at,
        completed_at=receipt.completed_at,
        deleted=DeletedCounts.model_validate(counts),
    )


@router.get("/{receipt_id}", response_model=DeletionPublic, responses=AUTH_RESPONSES)
async def deletion_receipt(
    receipt_id: uuid.UUID, session: ReadSessionDep, caller: CallerDep
) -> DeletionPublic:
    """A deletion's receipt (the owner's token of the deleted model)."""
    receipt = await DeletionRepository(session).get(receipt_id)
    payment = await PaymentRepository(session).get(receipt.payment_id) if receipt else None
    if receipt is None or payment is None or not matches(payment.access_token_hash, caller.token):
        raise await caller.not_found("Invalid receipt id")
    return deletion_public(receipt)
