"""One HTTP request per Replicate call: a busy answer is raised with its Retry-After, never retried inside.

`_reraise` runs where activities do (it counts the error on the activity's metric meter)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from replicate.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.replicate import _reraise
from ecomdream.clients.replicate import OneCallTransport, ProviderBusy


def _client(answer: httpx.Response, seen: list[httpx.Request]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    transport = OneCallTransport(httpx.MockTransport(handler))
    return Client(api_token="r8_test", base_url="http://replicate.test", transport=transport)


async def test_a_throttled_poll_is_one_request_and_says_when_to_call_again() -> None:
    seen: list[httpx.Request] = []
    throttled = httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "Request was throttled."})
    with pytest.raises(ProviderBusy) as busy:
        await _client(throttled, seen).predictions.async_get("p1")
    assert len(seen) == 1, "the SDK's own retry loop must not call again behind the rate limit"
    assert (busy.value.status, busy.value.retry_after) == (429, 1.0)
    with pytest.raises(ApplicationError) as retried:
        ActivityEnvironment().run(_reraise, busy.value)
    assert retried.value.next_retry_delay == timedelta(seconds=1)
    assert not retried.value.non_retryable
    assert "Request was throttled." in retried.value.message


async def test_an_unavailable_answer_without_retry_after_is_left_to_the_retry_policy() -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(ProviderBusy) as busy:
        await _client(httpx.Response(503, text="down"), seen).trainings.async_get("t1")
    assert len(seen) == 1
    with pytest.raises(ProviderBusy):
        ActivityEnvironment().run(_reraise, busy.value)
