"""Prompts and their images in Postgres; the listing is one SQL statement."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.contracts.prompt import PromptSpec
from ecomdream.models import Image, Prompt, PromptStatus, Version

# One statement: the version (so an unknown id is told apart from an empty list) and one page of its
# prompts, newest first, each with its images aggregated as JSON.
LIST_SQL = text(
    """
    SELECT v.id AS version_id,
           COALESCE((
             SELECT json_agg(page ORDER BY page.created_at DESC, page.id DESC)
             FROM (
               SELECT p.id, p.prompt_text, p.negative_prompt, p.amount_images, p.status, p.error,
                      p.width, p.height, p.seed, p.created_at, p.finished_at,
                      COALESCE((
                        SELECT json_agg(json_build_object(
                                 'key', i.s3_key, 'width', i.width, 'height', i.height,
                                 'created_at', i.created_at) ORDER BY i.position)
                        FROM images i WHERE i.prompt_id = p.id AND i.expired_at IS NULL), '[]'::json) AS images
               FROM prompts p
               WHERE p.version_id = v.id
                 AND (CAST(:cursor_at AS timestamptz) IS NULL
                      OR (p.created_at, p.id) < (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid)))
               ORDER BY p.created_at DESC, p.id DESC
               LIMIT :limit
             ) page), '[]'::json) AS prompts
    FROM versions v
    WHERE v.id = :version_id
    """
)

ONE_SQL = text(
    """
    SELECT p.id, p.version_id, p.prompt_text, p.negative_prompt, p.amount_images, p.status, p.error,
           p.width, p.height, p.seed, p.created_at, p.finished_at,
           COALESCE((
             SELECT json_agg(json_build_object(
                      'key', i.s3_key, 'width', i.width, 'height', i.height, 'created_at', i.created_at)
                    ORDER BY i.position)
             FROM images i WHERE i.prompt_id = p.id AND i.expired_at IS NULL), '[]'::json) AS images
    FROM prompts p WHERE p.id = :prompt_id
    """
)


class PromptRepository:
    """Prompts, their predictions and their images."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def start(self, prompt_id: uuid.UUID, version_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Record a running prompt (a second call changes nothing)."""
        await self.session.execute(
            insert(Prompt)
            .values(id=prompt_id, version_id=version_id, status=PromptStatus.RUNNING.value, **values)
            .on_conflict_do_nothing(index_elements=[Prompt.id])
        )

    async def start_spec(self, prompt_id: uuid.UUID, version_id: uuid.UUID, spec: PromptSpec) -> None:
        """Record a running prompt from what the customer asked for (a second call changes nothing)."""
        await self.start(
            prompt_id,
            version_id,
            {
                "prompt_text": spec.prompt,
                "negative_prompt": spec.negative_prompt,
                "amount_images": spec.num_outputs,
                "width": spec.width,
                "height": spec.height,
                "seed": spec.seed,
                "guidance_scale": spec.guidance_scale,
                "num_inference_steps": spec.num_inference_steps,
            },
        )

    async def get(self, prompt_id: uuid.UUID) -> Prompt | None:
        """One prompt row."""
        return await self.session.get(Prompt, prompt_id)

    async def set_prediction(self, prompt_id: uuid.UUID, prediction_id: str) -> None:
        """Remember the prediction so a retry never creates a second one."""
        await self.session.execute(
            update(Prompt)
            .where(Prompt.id == prompt_id)
            .values(prediction_id=func.coalesce(Prompt.prediction_id, prediction_id))
        )

    async def owned_predictions(self, prediction_ids: list[str]) -> set[str]:
        """Which of these Replicate predictions already belong to a prompt."""
        rows = await self.session.scalars(
            select(Prompt.prediction_id).where(Prompt.prediction_id.in_(prediction_ids))
        )
        return {row for row in rows if row is not None}

    async def succeed(
        self,
        prompt_id: uuid.UUID,
        version_id: uuid.UUID,
        images: list[dict[str, Any]],
        predict_time: float | None,
        at: datetime,
    ) -> bool:
        """Store the images and charge them to the quota, once; False when it was already recorded."""
        done = await self.session.execute(
            update(Prompt)
            .where(Prompt.id == prompt_id, Prompt.status == PromptStatus.RUNNING.value)
            .values(status=PromptStatus.SUCCEEDED.value, predict_time=predict_time, finished_at=at)
            .returning(Prompt.id)
        )
        if done.first() is None:
            return False
        if images:
            await self.session.execute(
                insert(Image)
                .values([{"prompt_id": prompt_id, **image} for image in images])
                .on_conflict_do_nothing()
            )
        await self.session.execute(
            update(Version)
            .where(Version.id == version_id)
            .values(images_generated=Version.images_generated + len(images))
        )
        return True

    async def fail(self, prompt_id: uuid.UUID, error: str, at: datetime) -> None:
        """Mark the prompt failed (it costs the customer nothing)."""
        await self.session.execute(
            update(Prompt)
            .where(Prompt.id == prompt_id, Prompt.status == PromptStatus.RUNNING.value)
            .values(status=PromptStatus.FAILED.value, error=error, finished_at=at)
        )

    async def page(
        self, version_id: uuid.UUID, limit: int, cursor: tuple[datetime, uuid.UUID] | None
    ) -> list[dict[str, Any]] | None:
        """One page of a version's prompts with their images, newest first; None for an unknown version."""
        row = (
            await self.session.execute(
                LIST_SQL,
                {
                    "version_id": version_id,
                    "limit": limit,
                    "cursor_at": cursor[0] if cursor else None,
                    "cursor_id": cursor[1] if cursor else None,
                },
            )
        ).first()
        if row is None:
            return None
        prompts: list[dict[str, Any]] = row.prompts
        return prompts

    async def one(self, prompt_id: uuid.UUID) -> dict[str, Any] | None:
        """One prompt with its images."""
        row = (await self.session.execute(ONE_SQL, {"prompt_id": prompt_id})).mappings().first()
        return dict(row) if row else None

    async def images_of_version(self, version_id: uuid.UUID, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Up to `limit` of the version's images (id, object key), locked for their deletion."""
        rows = await self.session.execute(
            select(Image.id, Image.s3_key)
            .join(Prompt, Prompt.id == Image.prompt_id)
            .where(Prompt.version_id == version_id)
            .order_by(Image.id)
            .limit(limit)
            .with_for_update(of=Image)
        )
        return [(row[0], row[1]) for row in rows]

    async def delete_images(self, image_ids: list[uuid.UUID]) -> int:
        """Delete these image rows."""
        result = await self.session.execute(delete(Image).where(Image.id.in_(image_ids)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def delete_of_version(self, version_id: uuid.UUID) -> int:
        """Delete the version's prompts (their images first: see `images_of_version`)."""
        result = await self.session.execute(delete(Prompt).where(Prompt.version_id == version_id))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def expiring_images(self, before: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Up to `limit` live images made before `before` (id, object key); rows another run holds are skipped."""
        rows = await self.session.execute(
            select(Image.id, Image.s3_key)
            .where(Image.created_at < before, Image.expired_at.is_(None))
            .order_by(Image.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [(row[0], row[1]) for row in rows]

    async def mark_expired(self, image_ids: list[uuid.UUID], at: datetime) -> None:
        """Their objects are deleted: the API stops offering their URLs."""
        await self.session.execute(update(Image).where(Image.id.in_(image_ids)).values(expired_at=at))
