"""Copying generated images into our bucket: only from the delivery hosts, never more than the cap, and the
Replicate token goes to the delivery host alone, never along a redirect."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.prompts import PromptActivities
from ecomdream.clients.storage import Storage
from ecomdream.contracts.prompt import CopiedImage, ImageCopy
from tests.fixtures.files import TOKEN, Answer, file_server
from tests.fixtures.files import copying_activities as activities_for
from tests.fixtures.photos import photo

IMAGE = photo(fmt="PNG")
CAP = 1024 * 1024
# Far more than anything read before the cap stops the download (socket buffers hold a few MB).
ENDLESS = 1024 * 1024 * 1024
READ_AT_MOST = 64 * 1024 * 1024


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The worker's kind of client: no default headers, no automatic redirects."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def image_copy(*urls: str) -> ImageCopy:
    """A new prompt's outputs."""
    keys = tuple(f"images/{uuid.uuid4().hex}" for _ in urls)
    return ImageCopy(prompt_id=uuid.uuid4(), version_id=uuid.uuid4(), urls=urls, keys=keys)


async def copy_images(activities: PromptActivities, copy: ImageCopy) -> list[CopiedImage]:
    """Run the activity once, as the worker would."""
    copied: list[CopiedImage] = await ActivityEnvironment().run(activities.copy_images, copy)
    return copied


async def refused(activities: PromptActivities, copy: ImageCopy) -> ApplicationError:
    """The prompt's failure (it must be final: no retry may copy the images later)."""
    with pytest.raises(ApplicationError) as failed:
        await copy_images(activities, copy)
    assert failed.value.non_retryable
    return failed.value


async def bucket_of(storage: Storage, copy: ImageCopy) -> list[str]:
    """What our bucket keeps of the prompt's images."""
    return [key for prefix in copy.keys for key in await storage.list_keys(prefix)]


async def delete_copied(storage: Storage, copy: ImageCopy) -> None:
    """Remove the test's images."""
    for prefix in copy.keys:
        await storage.delete_prefix(prefix)


async def test_an_output_on_another_host_fails_the_prompt_and_that_host_hears_nothing(
    storage: Storage, http: httpx.AsyncClient
) -> None:
    with file_server({"/0.png": Answer(body=IMAGE)}) as delivery, file_server() as foreign:
        activities = activities_for(storage, http, delivery.url)
        copy = image_copy(f"{delivery.url}/0.png", f"{foreign.url}/1.png")
        error = await refused(activities, copy)
        assert (error.type, error.message) == (
            "BadOutput",
            "the generated image came from an unexpected place",
        )
        assert foreign.received == [], "not even a connection with our token"
        assert await bucket_of(storage, copy) == [], "the image copied meanwhile is deleted again"


async def test_the_token_goes_to_the_delivery_host_and_never_along_a_redirect(
    storage: Storage, http: httpx.AsyncClient
) -> None:
    with file_server() as delivery, file_server() as cdn, file_server() as foreign:
        cdn.answers["/0.png"] = Answer(body=IMAGE)
        delivery.answers["/0.png"] = Answer(status=302, headers={"Location": f"{cdn.url}/0.png"})
        delivery.answers["/1.png"] = Answer(status=307, headers={"Location": f"{foreign.url}/1.png"})
        activities = activities_for(storage, http, delivery.url, cdn.url)

        copy = image_copy(f"{delivery.url}/0.png")
        (copied,) = await copy_images(activities, copy)
        assert (copied.width, copied.height) == (640, 640)
        assert await bucket_of(storage, copy) == [copied.key]
        assert [h.get("authorization") for h in delivery.headers_of("/0.png")] == [f"Bearer {TOKEN}"]
        assert [h.get("authorization") for h in cdn.headers_of("/0.png")] == [None]

        copy = image_copy(f"{delivery.url}/1.png")
        error = await refused(activities, copy)
        assert (error.type, error.message) == (
            "BadOutput",
            "the generated image came from an unexpected place",
        )
        assert foreign.received == []
        await delete_copied(storage, copy)


@pytest.mark.parametrize("announced", [False, True], ids=["chunked", "content-length"])
async def test_an_output_above_the_cap_fails_without_being_read_whole(
    storage: Storage, http: httpx.AsyncClient, announced: bool
) -> None:
    endless = Answer(body=IMAGE, stream=ENDLESS, announced=announced)
    with file_server({"/0.png": endless}) as delivery:
        copy = image_copy(f"{delivery.url}/0.png")
        error = await refused(activities_for(storage, http, delivery.url, max_bytes=CAP), copy)
        assert (error.type, error.message) == ("BadOutput", "the generated image is too large")
        assert delivery.sent < READ_AT_MOST, f"{delivery.sent} bytes went out before the download stopped"
        assert await bucket_of(storage, copy) == []


async def test_an_image_of_exactly_the_cap_is_copied(storage: Storage, http: httpx.AsyncClient) -> None:
    with file_server({"/0.png": Answer(body=IMAGE)}) as delivery:
        copy = image_copy(f"{delivery.url}/0.png")
        (copied,) = await copy_images(activities_for(storage, http, delivery.url, max_bytes=len(IMAGE)), copy)
        assert await bucket_of(storage, copy) == [copied.key]
        await delete_copied(storage, copy)
        error = await refused(activities_for(storage, http, delivery.url, max_bytes=len(IMAGE) - 1), copy)
        assert error.message == "the generated image is too large"
