"""What customers may read about failures: their own reasons, never an internal error text."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.policies import customer_reason


def _failed(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity error",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="copy_images",
        activity_id="1",
        retry_state=None,
    )
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    "cause",
    [
        ApplicationError("output 2 is gone from Replicate", type="OutputGone"),
        ApplicationError("output 0 is not an image", type="BadOutput"),
        ApplicationError("Replicate refused the request: Invalid version", type="ReplicateRejected"),
    ],
)
def test_reasons_written_for_the_customer_are_kept(cause: ApplicationError) -> None:
    assert customer_reason(_failed(cause)) == cause.message


@pytest.mark.parametrize(
    "cause",
    [
        ApplicationError(
            "An error occurred (AccessDenied) when calling the PutObject operation: arn:aws:iam::1234",
            type="ClientError",
        ),
        ApplicationError("Connection refused: postgresql://app@db:5432", type="OSError"),
        RuntimeError("KeyError: 'output'"),
    ],
)
def test_internal_error_texts_are_not_shown(cause: BaseException) -> None:
    assert customer_reason(_failed(cause)) == "a temporary problem on our side"
