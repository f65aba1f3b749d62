"""The ledger in Postgres keeps what the journey decided, whatever order activities commit in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ecomdream.db.session import create_sessionmaker, transaction
from ecomdream.models import Payment, PaymentStatus
from ecomdream.repositories.payments import PaymentRepository
from ecomdream.repositories.versions import VersionRepository


async def test_quota_writes_committed_out_of_order_keep_the_larger_total(db: AsyncEngine) -> None:
    sessions = create_sessionmaker(db)
    payment_id, version_id = uuid.uuid4(), uuid.uuid4()
    async with transaction(sessions) as session:
        await PaymentRepository(session).add(
            Payment(
                id=payment_id,
                plan_id=1,
                status=PaymentStatus.PAID.value,
                amount_total=1300,
                currency="usd",
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    async with transaction(sessions) as session:
        await VersionRepository(session).create(
            version_id=version_id,
            payment_id=payment_id,
            class_name="sneaker",
            trigger_token="TOK",
            images_count=5,
            images_quota=100,
        )
    # Two add-ons: the journey recorded 150, then 250; the second write happened to commit first.
    for quota in (250, 150):
        async with transaction(sessions) as session:
            await VersionRepository(session).set_quota(version_id, quota)
    async with transaction(sessions) as session:
        version = await VersionRepository(session).get(version_id)
    assert version is not None
    assert version.images_quota == 250
