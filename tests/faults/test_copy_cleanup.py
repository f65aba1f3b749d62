"""A prompt whose images cannot all be copied leaves none of them in our bucket."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from ecomdream.clients.storage import Storage
from ecomdream.contracts.prompt import ImageCopy
from tests.fixtures.files import Answer, copying_activities, file_server
from tests.fixtures.photos import photo
from workflows.prompt import COPY_RETRY

UNREACHABLE = "http://127.0.0.1:1/out-1.png"  # nothing listens on port 1: a connection error, retried


def _attempt(number: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number, retry_policy=COPY_RETRY)
    return env


async def test_copied_images_stay_for_a_retry_and_go_after_the_last_attempt(storage: Storage) -> None:
    with file_server({"/out-0.png": Answer(body=photo(fmt="PNG"))}) as delivery:
        copy = ImageCopy(
            prompt_id=uuid.uuid4(),
            version_id=uuid.uuid4(),
            urls=(f"{delivery.url}/out-0.png", UNREACHABLE),
            keys=(f"images/{uuid.uuid4().hex}", f"images/{uuid.uuid4().hex}"),
        )
        copied = copy.keys[0]
        async with httpx.AsyncClient(timeout=5) as http:
            activities = copying_activities(storage, http, delivery.url, "http://127.0.0.1:1")

            with pytest.raises(httpx.ConnectError):
                await _attempt(1).run(activities.copy_images, copy)
            assert await storage.list_keys(copied) == [f"{copied}.png"], "a retry overwrites the same keys"

            assert COPY_RETRY.maximum_attempts
            with pytest.raises(httpx.ConnectError):
                await _attempt(COPY_RETRY.maximum_attempts).run(activities.copy_images, copy)
            assert await storage.list_keys(copied) == [], "the prompt fails uncharged and keeps no image"
