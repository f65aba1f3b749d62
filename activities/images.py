"""Photo activities: check the staged photos and build the training zip. Pillow never runs on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

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

LOST_BEFORE_CHECK = "This file was lost before it was checked; upload it again"
PHOTOS_LOST = "Some of your photos were lost before training started; please upload them again"


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
        # Photos one zip has on their way (fetched, normalising or normalised) ahead of the one it writes.
        self.window = concurrency

    async def _cpu(self, fn: partial[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _fetch(self, photo: StagedPhoto) -> bytes | None:
        """The staged photo's bytes; None when it is gone (retrying cannot bring it back, the customer can)."""
        try:
            return await self.storage.get(photo.key)
        except self.storage.client.exceptions.NoSuchKey:
            return None

    async def _check_one(self, photo: StagedPhoto) -> PhotoProblem | None:
        async with self.slots:
            data = await self._fetch(photo)
            if data is None:
                return PhotoProblem(file=photo.name, error=LOST_BEFORE_CHECK)
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

    async def _normalised(self, photo: StagedPhoto) -> bytes | None:
        """The photo as the trainer gets it; None when it is gone."""
        async with self.slots:
            data = await self._fetch(photo)
            if data is None:
                return None
            return await self._cpu(partial(imaging.normalise_image, data, max_side=self.rules.max_side))

    async def _in_upload_order(self, photos: Sequence[StagedPhoto]) -> AsyncGenerator[bytes | None, None]:
        """Each photo normalised (None: lost) in upload order, at most `window` of them on their way at once."""
        ahead: deque[asyncio.Task[bytes | None]] = deque()
        try:
            for photo in photos:
                ahead.append(asyncio.create_task(self._normalised(photo)))
                if len(ahead) == self.window:
                    yield await ahead.popleft()
            while ahead:
                yield await ahead.popleft()
        finally:
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)

    async def _photos_lost(self, rest: Sequence[StagedPhoto]) -> ApplicationError:
        """The customer's error naming rest[0], found lost, and every later photo that is gone too."""
        present = await asyncio.gather(*(self.storage.exists(p.key) for p in rest[1:]))
        lost = [rest[0].name, *(p.name for p, here in zip(rest[1:], present, strict=True) if not here)]
        return ApplicationError(PHOTOS_LOST, lost, type="PhotosLost", non_retryable=True)

    async def _upload_zip(self, key: str, upload_id: str, photos: Sequence[StagedPhoto]) -> int:
        """Zip the photos as `00.jpg`, `01.jpg`, ... in upload order, each part uploaded once full; returns the size."""
        archive = StreamingZip()
        parts: list[dict[str, object]] = []

        async def upload(ready: list[bytes]) -> None:
            for part in ready:
                parts.append(await self.storage.upload_part(key, upload_id, len(parts) + 1, part))

        async with contextlib.aclosing(self._in_upload_order(photos)) as normalised:
            for index in range(len(photos)):
                jpeg = await anext(normalised)
                if jpeg is None:
                    raise await self._photos_lost(photos[index:])
                await upload(await self._cpu(partial(archive.add, f"{index:02d}.jpg", jpeg)))
                activity.heartbeat(index)
        await upload(archive.close())
        await self.storage.complete_multipart(key, upload_id, parts)
        return archive.bytes_written

    @activity.defn
    async def build_training_zip(self, request: ZipRequest) -> ZipResult:
        """Normalise the photos on the image pool into `training/<version>.zip` by multipart upload.

        A finished zip is reused. Lost photos fail it for the customer to upload again (`PhotosLost`).
        """
        key = training_zip_key(request.version_id)
        if await self.storage.exists(key):
            return ZipResult(key=key, size=await self.storage.size(key), images=len(request.photos))
        upload_id = await self.storage.start_multipart(key, "application/zip")
        try:
            size = await self._upload_zip(key, upload_id, request.photos)
        except BaseException:
            # Failed, photos lost or cancelled: no half-written zip is left, nor parts S3 would keep.
            await self.storage.abort_multipart(key, upload_id)
            raise
        return ZipResult(key=key, size=size, images=len(request.photos))

    @activity.defn
    async def delete_objects(self, cleanup: Cleanup) -> int:
        """Delete every object under the given prefixes (nothing left is fine)."""
        deleted = 0
        for prefix in cleanup.prefixes:
            deleted += await self.storage.delete_prefix(prefix)
        return deleted
