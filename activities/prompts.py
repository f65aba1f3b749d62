"""Prompt activities: the prompt's ledger rows and copying generated images into our bucket."""

from __future__ import annotations

import asyncio
import uuid

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecomdream import imaging
from ecomdream.clients.deliveries import Deliveries, OutputGone, OutputRefused, OutputTooLarge
from ecomdream.clients.storage import Storage
from ecomdream.contracts.prompt import CopiedImage, ImageCopy, PromptFinished, PromptStarted
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.repositories.prompts import PromptRepository

MAX_IMAGE_BYTES = 50 * 1024 * 1024
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def _refusal(position: int, refused: OutputRefused) -> ApplicationError:
    """The prompt's failure for an output that will never be copied; its message is the customer's."""
    if isinstance(refused, OutputGone):
        return ApplicationError(
            f"output {position} is gone from Replicate", type="OutputGone", non_retryable=True
        )
    reason = "is too large" if isinstance(refused, OutputTooLarge) else "came from an unexpected place"
    return ApplicationError(f"the generated image {reason}", type="BadOutput", non_retryable=True)


def _last_attempt() -> bool:
    """Whether a failure now is the activity's last (no retry will copy the images again)."""
    info = activity.info()
    limit = info.retry_policy.maximum_attempts if info.retry_policy else 0
    return bool(limit) and info.attempt >= limit


class PromptActivities:
    """Activities that need the database, the bucket and the downloads of Replicate's outputs."""

    def __init__(self, sessionmaker: SessionMaker, storage: Storage, deliveries: Deliveries) -> None:
        self.sessionmaker = sessionmaker
        self.storage = storage
        self.deliveries = deliveries

    @activity.defn
    async def record_prompt_started(self, started: PromptStarted) -> None:
        """Insert the running prompt (idempotent on the prompt id)."""
        async with transaction(self.sessionmaker) as session:
            await PromptRepository(session).start_spec(started.prompt_id, started.version_id, started.spec)

    async def _copy_one(self, copy: ImageCopy, position: int, url: str) -> CopiedImage:
        try:
            data = await self.deliveries.fetch(url)
        except OutputRefused as refused:
            activity.logger.warning("output %d refused: %s", position, refused)
            raise _refusal(position, refused) from None
        content_type = imaging.sniff_format(data[:64]) or ""
        ext = EXTENSIONS.get(content_type, "")
        if not ext:
            raise ApplicationError(f"output {position} is not an image", type="BadOutput", non_retryable=True)
        width, height = await asyncio.to_thread(imaging.image_size, data)
        key = f"{copy.keys[position]}.{ext}"
        await self.storage.put(key, data, content_type)
        return CopiedImage(position=position, key=key, width=width, height=height)

    @activity.defn
    async def copy_images(self, copy: ImageCopy) -> list[CopiedImage]:
        """Copy every output concurrently (Replicate deletes them after an hour); same keys on retry.

        When an output can never be copied the prompt fails and is not charged, so the images already
        copied are deleted again: nothing of a failed prompt stays in the bucket.
        """
        results = await asyncio.gather(
            *(self._copy_one(copy, i, url) for i, url in enumerate(copy.urls)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        final = [e for e in errors if isinstance(e, ApplicationError) and e.non_retryable]
        if final or (errors and _last_attempt()):
            for key in copy.keys:
                await self.storage.delete_prefix(key)
        if errors:
            raise (final or errors)[0]
        return [r for r in results if isinstance(r, CopiedImage)]

    @activity.defn
    async def record_prompt_finished(self, finished: PromptFinished) -> bool:
        """Store the outcome and images and charge the quota, in one transaction, exactly once."""
        async with transaction(self.sessionmaker) as session:
            prompts = PromptRepository(session)
            if finished.prediction_id:
                await prompts.set_prediction(finished.prompt_id, finished.prediction_id)
            if finished.error is not None:
                await prompts.fail(finished.prompt_id, finished.error, activity.info().started_time)
                return False
            images = [
                {
                    "id": uuid.uuid5(finished.prompt_id, str(image.position)),
                    "position": image.position,
                    "s3_key": image.key,
                    "width": image.width,
                    "height": image.height,
                }
                for image in finished.images
            ]
            return await prompts.succeed(
                finished.prompt_id,
                finished.version_id,
                images,
                finished.predict_time,
                activity.info().started_time,
            )
