"""Recorded histories replay against today's workflow code: a change that would break running
journeys fails here (guard it with workflow.patched). Record with `python -m tests.replay.record_histories`.

The replayer decodes with the service's codec: histories saved in clear replay as they are, and the same
histories with their payloads encrypted (as Temporal keeps them) replay too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from ecomdream.clients.temporal import data_converter
from ecomdream.codec.encryption import EncryptionCodec, is_encrypted
from ecomdream.codec.keys import PayloadKey
from tests.fixtures.payloads import convert_history, payloads_in
from workflows import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
TEXTS = {path: path.read_text() for path in HISTORIES}
CODEC = EncryptionCodec([PayloadKey("replay", os.urandom(32))])


def test_every_workflow_kind_has_a_recorded_history() -> None:
    kinds = {
        json.loads(TEXTS[p])["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
        for p in HISTORIES
    }
    assert kinds == {"JourneyWorkflow", "AddonWorkflow", "PromptWorkflow"}


async def _encrypted(history: WorkflowHistory) -> WorkflowHistory:
    encrypted = await convert_history(history, CODEC.encode)
    assert any(is_encrypted(p) for event in encrypted.events for p in payloads_in(event))
    return encrypted


@pytest.mark.parametrize("encrypted", [False, True], ids=["as-saved", "encrypted"])
@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_without_nondeterminism(path: Path, encrypted: bool) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(CODEC))
    history = WorkflowHistory.from_json(path.stem, TEXTS[path])
    if encrypted:
        history = await _encrypted(history)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


async def test_an_encrypted_history_needs_the_codec_to_replay() -> None:
    path = next(p for p in HISTORIES if p.name.startswith("prompt_"))
    history = await _encrypted(WorkflowHistory.from_json(path.stem, TEXTS[path]))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(None))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
