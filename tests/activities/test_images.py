"""The photo activities against the stack's S3: what the customer hears about their photos, what the trainer gets."""

# The messages customers see use the multiplication sign; assert them verbatim.
# ruff: noqa: RUF001

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.images import ImageActivities, PhotoRules, training_zip_key
from ecomdream.clients.storage import Storage
from ecomdream.contracts import staging_prefix
from ecomdream.contracts.training import PhotoCheck, StagedPhoto, ZipRequest
from ecomdream.imaging import normalise_image
from tests.fixtures.photos import photo, truncated_jpeg, valid_photos

WINDOW = 2


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    """The Pillow pool, two threads as on a small worker."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pillow") as pool:
        yield pool


@pytest.fixture
def images(storage: Storage, executor: ThreadPoolExecutor) -> ImageActivities:
    """The photo activities with two photos in memory at once."""
    return ImageActivities(storage, executor, PhotoRules(), concurrency=WINDOW)


@pytest.fixture
async def staging(storage: Storage) -> AsyncIterator[str]:
    """A fresh staging prefix, emptied after the test."""
    prefix = staging_prefix(uuid.uuid4())
    yield prefix
    await storage.delete_prefix(prefix)


@pytest.fixture
async def version_id(storage: Storage) -> AsyncIterator[uuid.UUID]:
    """A new version; its training zip is removed after the test."""
    version_id = uuid.uuid4()
    yield version_id
    await storage.delete_prefix(training_zip_key(version_id))


async def stage(storage: Storage, prefix: str, files: Sequence[tuple[str, bytes]]) -> tuple[StagedPhoto, ...]:
    """Put the files under prefix as the API stages an upload, in upload order."""
    photos = tuple(StagedPhoto(name=name, key=f"{prefix}{i}") for i, (name, _) in enumerate(files))
    for staged, (_, data) in zip(photos, files, strict=True):
        await storage.put(staged.key, data, "image/jpeg")
    return photos


async def test_check_photos_reports_every_problem_in_upload_order(
    images: ImageActivities, storage: Storage, staging: str
) -> None:
    files = [
        ("01.jpg", photo(seed=1)),
        ("02.jpg", b""),
        ("03.png", photo(300, 300, fmt="PNG")),
        ("04.webp", photo(seed=4, fmt="WEBP")),
        ("05.gif", photo(seed=5, fmt="GIF")),
        ("06.jpg", truncated_jpeg()),
        ("07.jpg", photo(seed=7)),
    ]
    check = PhotoCheck(photos=await stage(storage, staging, files))

    result = await ActivityEnvironment().run(images.check_photos, check)

    assert [(p.file, p.error) for p in result.problems] == [
        ("02.jpg", "is an empty file"),
        ("03.png", "is 300×300 pixels; photos must be at least 512×512"),
        ("05.gif", "is a GIF; please upload JPEG, PNG, WebP or HEIC"),
        ("06.jpg", "is truncated or corrupt"),
    ]


async def pending_uploads(storage: Storage, key: str) -> list[str]:
    """Multipart uploads to key that were neither completed nor aborted."""
    response = await storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=key)
    return [upload.get("UploadId", "") for upload in response.get("Uploads", [])]


async def test_zip_holds_every_photo_normalised_in_upload_order(
    images: ImageActivities, storage: Storage, staging: str, version_id: uuid.UUID
) -> None:
    # The first photo is the largest, so photos behind it are normalised before it is.
    files = [("big.jpg", photo(2400, 1800, seed=0)), *valid_photos(5)]
    request = ZipRequest(version_id=version_id, photos=await stage(storage, staging, files))
    env = ActivityEnvironment()
    heartbeats: list[object] = []
    env.on_heartbeat = lambda *details: heartbeats.extend(details)

    result = await env.run(images.build_training_zip, request)

    archive = await storage.get(result.key)
    assert (result.key, result.size, result.images) == (training_zip_key(version_id), len(archive), 6)
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert zipped.namelist() == ["00.jpg", "01.jpg", "02.jpg", "03.jpg", "04.jpg", "05.jpg"]
        assert [zipped.read(name) for name in zipped.namelist()] == [
            normalise_image(data) for _, data in files
        ]
    assert heartbeats == [0, 1, 2, 3, 4, 5]


async def test_zip_normalises_ahead_of_the_writer_but_never_more_than_the_window(
    storage: Storage, executor: ThreadPoolExecutor, staging: str, version_id: uuid.UUID
) -> None:
    written = 0
    fetched: list[tuple[int, int]] = []  # (photo, photos written by then)

    class Watched(Storage):
        async def get(self, key: str) -> bytes:
            fetched.append((int(key.removeprefix(staging)), written))
            return await super().get(key)

    def wrote(*_: object) -> None:
        nonlocal written
        written += 1

    images = ImageActivities(Watched(storage.client, storage.bucket), executor, PhotoRules(), WINDOW)
    request = ZipRequest(version_id=version_id, photos=await stage(storage, staging, valid_photos(8)))
    env = ActivityEnvironment()
    env.on_heartbeat = wrote

    await env.run(images.build_training_zip, request)

    assert sorted(p for p, _ in fetched) == list(range(8))
    assert any(p > done for p, done in fetched), "no photo was fetched before the one ahead of it was written"
    assert all(p < done + WINDOW for p, done in fetched), fetched


async def test_a_lost_photo_fails_the_zip_for_the_customer_to_upload_again(
    images: ImageActivities, storage: Storage, staging: str, version_id: uuid.UUID
) -> None:
    files = valid_photos(5)
    photos = await stage(storage, staging, files)
    for lost in (photos[1], photos[3]):
        await storage.client.delete_object(Bucket=storage.bucket, Key=lost.key)

    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(
            images.build_training_zip, ZipRequest(version_id=version_id, photos=photos)
        )

    assert failure.value.type == "PhotosLost"
    assert failure.value.non_retryable
    assert failure.value.message == (
        "Some of your photos were lost before training started; please upload them again"
    )
    assert failure.value.details == ([files[1][0], files[3][0]],)
    key = training_zip_key(version_id)
    assert not await storage.exists(key)
    assert await pending_uploads(storage, key) == []


async def test_a_retried_zip_reuses_the_finished_archive(
    images: ImageActivities, storage: Storage, staging: str, version_id: uuid.UUID
) -> None:
    request = ZipRequest(version_id=version_id, photos=await stage(storage, staging, valid_photos(3)))
    first = await ActivityEnvironment().run(images.build_training_zip, request)
    etag = (await storage.client.head_object(Bucket=storage.bucket, Key=first.key))["ETag"]
    # Building it again would now fail: only reusing the finished zip can succeed.
    await storage.delete_prefix(staging)

    retried = await ActivityEnvironment().run(images.build_training_zip, request)

    assert retried == first
    assert (await storage.client.head_object(Bucket=storage.bucket, Key=first.key))["ETag"] == etag


async def test_cancelling_the_zip_aborts_its_upload(
    images: ImageActivities, storage: Storage, staging: str, version_id: uuid.UUID
) -> None:
    request = ZipRequest(version_id=version_id, photos=await stage(storage, staging, valid_photos(6)))
    env = ActivityEnvironment()
    # Temporal delivers a cancel in the answer to a heartbeat: here, the first one.
    env.on_heartbeat = lambda *_: env.cancel()

    with pytest.raises(asyncio.CancelledError):
        await env.run(images.build_training_zip, request)

    key = training_zip_key(version_id)
    assert not await storage.exists(key)
    assert await pending_uploads(storage, key) == []
