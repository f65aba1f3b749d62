"""The photo activities against the stack's S3: what the customer hears about their photos, what the trainer gets."""

# The messages customers see use the multiplication sign; assert them verbatim.
# ruff: noqa: RUF001

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.testing import ActivityEnvironment

from activities.images import ImageActivities, PhotoRules
from ecomdream.clients.storage import Storage
from ecomdream.contracts import staging_prefix
from ecomdream.contracts.training import PhotoCheck, StagedPhoto
from tests.fixtures.photos import photo, truncated_jpeg


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    """The Pillow pool, two threads as on a small worker."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pillow") as pool:
        yield pool


@pytest.fixture
def images(storage: Storage, executor: ThreadPoolExecutor) -> ImageActivities:
    """The photo activities with two photos in memory at once."""
    return ImageActivities(storage, executor, PhotoRules(), concurrency=2)


@pytest.fixture
async def staging(storage: Storage) -> AsyncIterator[str]:
    """A fresh staging prefix, emptied after the test."""
    prefix = staging_prefix(uuid.uuid4())
    yield prefix
    await storage.delete_prefix(prefix)


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
