"""A staged photo that is gone before it is checked is reported to the customer, not retried for ever."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

from temporalio.testing import ActivityEnvironment

from activities.images import ImageActivities, PhotoRules
from ecomdream.clients.storage import Storage
from ecomdream.contracts.training import PhotoCheck, StagedPhoto
from ecomdream.devstack.stack import S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, Stack
from tests.fixtures.photos import valid_photos


async def test_a_lost_staged_photo_is_a_problem_for_that_file(stack: Stack) -> None:
    prefix = f"staging/{uuid.uuid4()}/{uuid.uuid4()}/"
    (kept_name, kept), (lost_name, _) = valid_photos(2)
    async with AsyncExitStack() as exits:
        storage = await Storage.open(
            exits,
            endpoint_url=stack.s3.endpoint_url,
            region="us-east-1",
            access_key_id=S3_ACCESS_KEY,
            secret_access_key=S3_SECRET_KEY,
            bucket=S3_BUCKET,
        )
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
