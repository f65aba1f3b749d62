"""Access tokens and share links in Postgres (digests only). Repositories never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.models import Payment, Share, Version


class VersionAccess(NamedTuple):
    """A version and its owner's token digest."""

    version: Version
    owner_digest: str | None


class AccessRepository:
    """Who may open what."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def grant(self, payment_id: uuid.UUID, token_digest: str) -> None:
        """The token (its digest) opens this payment (and, for an initial payment, its model)."""
        await self.session.execute(
            update(Payment).where(Payment.id == payment_id).values(access_token_hash=token_digest)
        )

    async def rotate(self, old_digest: str, new_digest: str) -> None:
        """Replace a token everywhere it opens something (the journey's payment and its add-ons)."""
        await self.session.execute(
            update(Payment)
            .where(Payment.access_token_hash == old_digest)
            .values(access_token_hash=new_digest)
        )

    async def version(self, version_id: uuid.UUID) -> VersionAccess | None:
        """The version with its owner's token digest, in one query."""
        row = (
            await self.session.execute(
                select(Version, Payment.access_token_hash)
                .join(Payment, Payment.id == Version.payment_id)
                .where(Version.id == version_id)
            )
        ).one_or_none()
        return None if row is None else VersionAccess(row[0], row[1])

    async def shared(self, version_id: uuid.UUID, token_digest: str) -> bool:
        """Whether a live share of the version has this token."""
        share = select(Share.id).where(
            and_(Share.version_id == version_id, Share.token_hash == token_digest, Share.revoked_at.is_(None))
        )
        return bool(await self.session.scalar(select(share.exists())))

    async def add_share(self, version_id: uuid.UUID, token_digest: str, label: str | None) -> Share:
        """A new read-only link to the version."""
        share = Share(id=uuid.uuid4(), version_id=version_id, token_hash=token_digest, label=label)
        self.session.add(share)
        await self.session.flush()
        await self.session.refresh(share)
        return share

    async def shares(self, version_id: uuid.UUID) -> Sequence[Share]:
        """The version's live shares, oldest first."""
        query = (
            select(Share)
            .where(Share.version_id == version_id, Share.revoked_at.is_(None))
            .order_by(Share.created_at, Share.id)
        )
        return (await self.session.scalars(query)).all()

    async def revoke_share(self, version_id: uuid.UUID, share_id: uuid.UUID, at: datetime) -> bool:
        """Revoke a live share of the version; False when there is none with that id."""
        result = await self.session.execute(
            update(Share)
            .where(Share.id == share_id, Share.version_id == version_id, Share.revoked_at.is_(None))
            .values(revoked_at=func.coalesce(Share.revoked_at, at))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_shares(self, version_id: uuid.UUID) -> int:
        """Delete every share link of the version (live or revoked): their tokens open nothing any more."""
        result = await self.session.execute(delete(Share).where(Share.version_id == version_id))
        return int(result.rowcount)  # type: ignore[attr-defined]
