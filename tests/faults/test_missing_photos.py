"""A staged photo that is gone before it is checked is reported to the customer, not retried for ever."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

from temporalio.testing import ActivityEnvironment

from activities.images import ImageActivities, PhotoRules
from ecomdream.contracts.training import PhotoCheck, StagedPhoto
from ecomdream.devstack.stack import Stack
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import open_storage


async def test_a_lost_staged_photo_is_a_problem_for_that_file(stack: Stack) -> None:
    prefix = f"staging/{uuid.uuid4()}/{uuid.uuid4()}/"
    (kept_name, kept), (lost_name, _) = valid_photos(2)
    async with AsyncExitStack() as exits:
        storage = await open_storage(stack, exits)
        await storage.put(f"{prefix}0", kept, "image/jpeg")
        with ThreadPoolExecutor(2) as executor:
            images = ImageActivities(storage, executor, PhotoRules(), concurrency=2)
            check = PhotoCheck(
                photos=(
                    StagedPhoto(name=kept_name, key=f"{prefix}0"),
                    StagedPhoto(name=lost_name, key=f"{prefix}1"),
                )
            )
            result = await ActivityEnvironment().run(images.check_photos, check)
        await storage.delete_prefix(prefix)

    assert [(p.file, p.error) for p in result.problems] == [
        (lost_name, "This file was lost before it was checked; upload it again")
    ]
