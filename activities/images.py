"""Photo activities: check the staged photos and build the training zip. Pillow never runs on the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from temporalio import activity

from ecomdream import imaging
from ecomdream.clients.storage import Storage
from ecomdream.contracts.training import (
    Cleanup,
    PhotoCheck,
    PhotoCheckResult,
    PhotoProblem,
    StagedPhoto,
    ZipRequest,
    ZipResult,
)
from ecomdream.ziputil import StreamingZip

T = TypeVar("T")


@dataclass(frozen=True)
class PhotoRules:
    """What a usable photo is, and how photos are normalised for training."""

    min_side: int = 512
    max_pixels: int = 50_000_000
    max_side: int = 1024


def training_zip_key(version_id: object) -> str:
    """Where a version's training zip lives."""
    return f"training/{version_id}.zip"


class ImageActivities:
    """Activities that need object storage and CPU for Pillow."""

    def __init__(self, storage: Storage, executor: Executor, rules: PhotoRules, concurrency: int) -> None:
        self.storage = storage
        self.executor = executor
        self.rules = rules
        # Photos in memory at once: bounded regardless of how many the customer uploaded.
        self.slots = asyncio.Semaphore(concurrency)

    async def _cpu(self, fn: partial[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _check_one(self, photo: StagedPhoto) -> PhotoProblem | None:
        async with self.slots:
            try:
                data = await self.storage.get(photo.key)
            except self.storage.client.exceptions.NoSuchKey:
                # Retrying cannot bring it back; the customer can, by uploading again.
                return PhotoProblem(
                    file=photo.name, error="This file was lost before it was checked; upload it again"
                )
            problem = await self._cpu(
                partial(
                    imaging.check_image,
                    photo.name,
                    data,
                    min_side=self.rules.min_side,
                    max_pixels=self.rules.max_pixels,
                )
            )
        activity.heartbeat()
        return PhotoProblem(file=problem.file, error=problem.error) if problem else None

    @activity.defn
    async def check_photos(self, check: PhotoCheck) -> PhotoCheckResult:
        """Check every staged photo on all cores; every problem is reported, in upload order."""
        results = await asyncio.gather(*(self._check_one(p) for p in check.photos))
        return PhotoCheckResult(problems=tuple(p for p in results if p is not None))

    async def _normalised(self, photo: StagedPhoto) -> bytes:
        data = await self.storage.get(photo.key)
        return await self._cpu(partial(imaging.normalise_image, data, max_side=self.rules.max_side))

    @activity.defn
    async def build_training_zip(self, request: ZipRequest) -> ZipResult:
        """Normalise the photos into `training/<version>.zip` by multipart upload; a finished zip is reused."""
        key = training_zip_key(request.version_id)
        if await self.storage.exists(key):
            return ZipResult(key=key, size=await self.storage.size(key), images=len(request.photos))
        upload_id = await self.storage.start_multipart(key, "application/zip")
        archive = StreamingZip()
        parts: list[dict[str, object]] = []
        try:
            for index, photo in enumerate(request.photos):
                jpeg = await self._normalised(photo)
                for part in await self._cpu(partial(archive.add, f"{index:02d}.jpg", jpeg)):
                    parts.append(await self.storage.upload_part(key, upload_id, len(parts) + 1, part))
                activity.heartbeat(index)
            for part in archive.close():
                parts.append(await self.storage.upload_part(key, upload_id, len(parts) + 1, part))
            await self.storage.complete_multipart(key, upload_id, parts)
        except BaseException:
            await self.storage.abort_multipart(key, upload_id)
            raise
        return ZipResult(key=key, size=archive.bytes_written, images=len(request.photos))

    @activity.defn
    async def delete_objects(self, cleanup: Cleanup) -> int:
        """Delete every object under the given prefixes (nothing left is fine)."""
        deleted = 0
        for prefix in cleanup.prefixes:
            deleted += await self.storage.delete_prefix(prefix)
        return deleted
