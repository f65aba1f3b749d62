"""Property-based fuzzing of the published OpenAPI schema with schemathesis, against the running stack.

Every operation except the two signature-gated webhooks (covered in test_bad_input.py and the flow
tests) gets schema-valid and schema-violating requests. Checks on every response:

* ``not_a_server_error``: no 5xx, whatever the input;
* ``response_schema_conformance``: where the spec declares a body for the status, the body matches it;
* ``error_body_contract``: every 4xx body is ``{"code": <status>, "message": "<non-empty text>"}``, the
  one error shape the README promises (FastAPI's generated 422 schema cannot express it).

Runs are deterministic (derandomised Hypothesis, no example database) and bounded: 25 generated examples
per operation and mode, no shrinking, and a 5 s timeout per request, so a hang fails one request
instead of the suite's 180 s per-test timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import BaseSchema, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance
from temporalio.client import Client

from ecomdream.devstack.stack import Stack
from tests.api.test_prompts import prompt, ready_model
from tests.fixtures.wallet import WALLET

EXAMPLES_PER_RUN = 25
REQUEST_TIMEOUT_S = 5.0
# Each run has at most EXAMPLES_PER_RUN requests of at most REQUEST_TIMEOUT_S each.
RUN_BUDGET_S = 150.0

# Signature-gated: a fuzzer only ever reaches the "bad signature" branch. test_bad_input.py covers them.
WEBHOOKS = {("POST", "/api/v1/payments/webhook"), ("POST", "/api/v1/replicate/webhook")}
# An event stream answers 200 and stays open: a fuzzer's request would only time out. test_live_events.py
# covers it (401, 404, a malformed Last-Event-ID).
STREAMS = {("GET", "/api/v1/versions/{version_id}/events")}

# Operations without any parameter or body: there is nothing to make schema-violating.
NO_INPUT = [("GET", "/health"), ("GET", "/ready"), ("GET", "/api/v1/payments/plans/list")]
WITH_INPUT = [
    ("POST", "/api/v1/payments/create"),
    ("GET", "/api/v1/payments/{payment_id}"),
    ("POST", "/api/v1/versions/train/{payment_id}"),
    ("GET", "/api/v1/versions/info/{version_id}"),
    ("POST", "/api/v1/prompts/create/{version_id}"),
    ("GET", "/api/v1/prompts/list/{version_id}"),
    ("GET", "/api/v1/prompts/{prompt_id}"),
    ("POST", "/api/v1/payments/{payment_id}/token"),
    ("PUT", "/api/v1/payments/{payment_id}/callback"),
    ("POST", "/api/v1/payments/{payment_id}/callback/secret"),
    ("POST", "/api/v1/versions/{version_id}/shares"),
    ("GET", "/api/v1/versions/{version_id}/shares"),
    ("DELETE", "/api/v1/versions/{version_id}/shares/{share_id}"),
    ("DELETE", "/api/v1/versions/{version_id}"),
    ("GET", "/api/v1/deletions/{receipt_id}"),
]
# Read-only operations fuzzed a second time with ids that exist, so real 200 bodies are validated too.
WITH_KNOWN_IDS = [
    ("GET", "/api/v1/payments/{payment_id}", "payment_id"),
    ("GET", "/api/v1/versions/info/{version_id}", "version_id"),
    ("GET", "/api/v1/prompts/list/{version_id}", "version_id"),
    ("GET", "/api/v1/prompts/{prompt_id}", "prompt_id"),
]


def error_body_contract(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx answer is `{"code": <status>, "message": "<text>"}` (extra keys allowed)."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from exc
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert body.get("code") == response.status_code, f"code does not match the status: {body!r}"
    message = body.get("message")
    assert isinstance(message, str), f"no message: {body!r}"
    assert message.strip(), f"empty message: {body!r}"
    return None


CHECKS = [not_a_server_error, response_schema_conformance, error_body_contract]


@pytest.fixture(scope="module")
def live_schema(stack: Stack) -> BaseSchema:
    """The schema exactly as the running API serves it."""
    return schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json", timeout=10)


@pytest.fixture(scope="module")
async def known_ids(stack: Stack, temporal: Client) -> AsyncIterator[dict[str, str]]:
    """A paid payment with a ready model and one finished prompt."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, auth=WALLET) as api:
        payment_id, version_id = await ready_model(api, temporal)
        response = await prompt(api, version_id)
        assert response.status_code == 201, response.text
        yield {
            "payment_id": payment_id,
            "version_id": version_id,
            "prompt_id": response.json()["prompt_id"],
            "token": WALLET.token(payment_id),
        }


def fuzz(
    schema: BaseSchema,
    base_url: str,
    method: str,
    path: str,
    mode: GenerationMode,
    path_parameters: dict[str, Any] | None = None,
    token: str | None = None,
) -> None:
    """Run one bounded, deterministic Hypothesis campaign against one operation."""
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @settings(
        max_examples=EXAMPLES_PER_RUN,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure as found
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def campaign(case: Case[Any]) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=REQUEST_TIMEOUT_S, headers=headers)

    started = time.monotonic()
    campaign()
    elapsed = time.monotonic() - started
    assert elapsed < RUN_BUDGET_S, f"{method} {path} ({mode}) took {elapsed:.0f}s"


def test_every_operation_but_the_webhooks_is_fuzzed(live_schema: BaseSchema) -> None:
    results = list(live_schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the published schema has operations schemathesis cannot read"
    published = {(op.method.upper(), op.path) for op in operations}
    assert published == set(NO_INPUT) | set(WITH_INPUT) | WEBHOOKS | STREAMS


@pytest.mark.parametrize(("method", "path"), NO_INPUT, ids=[f"{m} {p}" for m, p in NO_INPUT])
def test_operations_without_input(live_schema: BaseSchema, stack: Stack, method: str, path: str) -> None:
    fuzz(live_schema, stack.api_url, method, path, GenerationMode.POSITIVE)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), WITH_INPUT, ids=[f"{m} {p}" for m, p in WITH_INPUT])
def test_operations_with_generated_input(
    live_schema: BaseSchema, stack: Stack, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(live_schema, stack.api_url, method, path, mode)


@pytest.mark.parametrize(
    ("method", "path", "param"), WITH_KNOWN_IDS, ids=[f"{m} {p}" for m, p, _ in WITH_KNOWN_IDS]
)
def test_read_operations_with_ids_that_exist(
    live_schema: BaseSchema, stack: Stack, known_ids: dict[str, str], method: str, path: str, param: str
) -> None:
    assert uuid.UUID(known_ids[param])
    fuzz(
        live_schema,
        stack.api_url,
        method,
        path,
        GenerationMode.POSITIVE,
        path_parameters={param: known_ids[param]},
        token=known_ids["token"],
    )
