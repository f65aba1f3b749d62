"""Temporal keeps a journey's history for the retention period: what customers typed and uploaded is in it
only encrypted, and operators read it through the codec server (Web UI, `temporal` CLI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHistory

from ecomdream.clients.temporal import connect_temporal, data_converter
from ecomdream.codec.encryption import is_encrypted
from ecomdream.contracts import journey_id
from ecomdream.devstack.stack import Stack
from ecomdream.devstack.temporal import temporal_cli
from tests.api.helpers import create_payment, pay, wait_stage
from tests.api.test_prompts import prompt
from tests.api.test_training import as_files, info, train
from tests.fixtures.payloads import payloads_in
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually
from tests.fixtures.wallet import WALLET

PROMPT = "my grandmother Ingeborg waving from the Bergen ferry"
PHOTO_NAMES = [f"ingeborg-{place}.jpg" for place in ("garden", "kitchen", "ferry", "church", "birthday")]
SECRETS = [PROMPT.encode(), *(name.encode() for name in PHOTO_NAMES)]


async def journey_with_a_prompt(api: httpx.AsyncClient, temporal: Client) -> tuple[str, str]:
    """A customer pays, uploads named photos, and asks for PROMPT; returns (journey id, prompt workflow id)."""
    created = await create_payment(api)
    await pay(created["url"])
    await wait_stage(temporal, created["payment_id"], "paid")
    photos = [(name, data) for name, (_, data) in zip(PHOTO_NAMES, valid_photos(5), strict=True)]
    trained = await train(api, created["payment_id"], as_files(photos), cls="woman")
    assert trained.status_code == 201, trained.text
    version_id = trained.json()["version_id"]
    await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
    await wait_stage(temporal, created["payment_id"], "ready")
    asked = await prompt(api, version_id, prompt=PROMPT)
    assert asked.status_code in (201, 202), asked.text
    prompt_workflow = f"prompt-{asked.json()['prompt_id']}"
    await temporal.get_workflow_handle(prompt_workflow).result()
    return journey_id(created["payment_id"]), prompt_workflow


@pytest.fixture(scope="module")
async def workflows(stack: Stack, temporal: Client) -> AsyncIterator[tuple[str, str]]:
    """(journey id, prompt workflow id) of one customer's journey."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, auth=WALLET) as api:
        yield await journey_with_a_prompt(api, temporal)


@pytest.fixture(scope="module")
async def stored(stack: Stack, workflows: tuple[str, str]) -> list[WorkflowHistory]:
    """Every run of the journey and the prompt, as the server keeps them, read by a client without the codec."""
    onlooker = await connect_temporal(stack.temporal.address, "default", None)
    found = []
    for workflow_id in workflows:
        async for run in onlooker.list_workflows(f"WorkflowId = '{workflow_id}'"):
            found.append(await onlooker.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history())
    assert len(found) >= 3, "the journey continues as new at ready, and the prompt has its own history"
    return found


def payloads(histories: Sequence[WorkflowHistory]) -> list[Payload]:
    """Every payload of every event."""
    return [payload for run in histories for event in run.events for payload in payloads_in(event)]


def readable(found: Sequence[Payload]) -> bytes:
    """Everything an onlooker can read in the payloads' data."""
    return b"\n".join(payload.data for payload in found)


async def test_a_history_read_without_the_codec_holds_no_prompt_and_no_photo_name(
    stored: list[WorkflowHistory], workflows: tuple[str, str]
) -> None:
    found = payloads(stored)
    assert any(is_encrypted(payload) for payload in found)
    clear = readable(found) + "".join(run.to_json() for run in stored).encode()
    for secret in SECRETS:
        assert secret not in clear, secret

    # What operators find journeys by stays readable without the codec.
    summaries = [
        run.events[0].user_metadata.summary for run in stored if run.events[0].HasField("user_metadata")
    ]
    texts = await data_converter(None).decode(summaries, [str] * len(summaries))
    payment_id = workflows[0].removeprefix("journey-")
    assert any(f"payment {payment_id}" in text for text in texts), texts


async def test_the_codec_server_shows_operators_everything(
    stack: Stack, stored: list[WorkflowHistory]
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{stack.codec_url}/decode",
            content=json_format.MessageToJson(Payloads(payloads=payloads(stored))),
            headers={"Authorization": f"Bearer {stack.secrets.token}", "X-Namespace": "default"},
        )
    assert response.status_code == 200, response.text
    decoded = readable(json_format.Parse(response.text, Payloads()).payloads)
    for secret in SECRETS:
        assert secret in decoded, secret


async def cli_show(stack: Stack, workflow_id: str, *codec: str) -> WorkflowHistory:
    """`temporal workflow show --output json` as an operator runs it (OPERATIONS.md)."""
    cli = await asyncio.create_subprocess_exec(
        *(temporal_cli(), "workflow", "show", "--output", "json", "--workflow-id", workflow_id),
        *("--address", stack.temporal.address, *codec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await cli.communicate()
    assert cli.returncode == 0, err.decode()
    return WorkflowHistory.from_json(workflow_id, out.decode())


async def test_the_temporal_cli_decodes_through_the_codec_server(
    stack: Stack, workflows: tuple[str, str]
) -> None:
    prompt_workflow = workflows[1]
    codec = ("--codec-endpoint", stack.codec_url, "--codec-auth", f"Bearer {stack.secrets.token}")
    assert PROMPT.encode() in readable(payloads([await cli_show(stack, prompt_workflow, *codec)]))
    assert PROMPT.encode() not in readable(payloads([await cli_show(stack, prompt_workflow)]))
