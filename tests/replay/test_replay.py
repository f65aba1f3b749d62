"""Recorded histories replay against today's workflow code: a change that would break running
journeys fails here (guard it with workflow.patched). Record with `python -m tests.replay.record_histories`.

Every path a journey, an add-on or a prompt can take has a recording (`PATHS`), and each recording must
show the story its name tells, so that a path cannot lose its recording, nor a recording its meaning.

The replayer decodes with the service's codec: histories saved in clear replay as they are, and the same
histories with their payloads encrypted (as Temporal keeps them) replay too.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from ecomdream.clients.temporal import data_converter
from ecomdream.codec.encryption import EncryptionCodec, is_encrypted
from ecomdream.codec.keys import PayloadKey
from tests.fixtures.payloads import convert_history, payloads_in
from tests.replay import stack_paths, standin_paths
from tests.replay.archive import Recording, recordings
from workflows import WORKFLOWS

Event = dict[str, Any]


@dataclass(frozen=True)
class Story:
    """What a path's recording must show, across its runs.

    `ends`: the last stages it went through (`JourneyStage` upserts, repeats folded; a prompt: its outcome);
    `updates` and `failures`: exactly the updates it took and the failures it met (activities failed,
    updates refused); `shows`: other facts it must contain; `runs`: how many runs it took.
    """

    ends: tuple[str, ...]
    updates: frozenset[str]
    failures: frozenset[str]
    shows: frozenset[str]
    runs: int
    workflow: str


def story(
    ends: str,
    updates: str = "open_checkout",
    *,
    failures: str = "",
    shows: str = "",
    runs: int = 1,
    workflow: str = "JourneyWorkflow",
) -> Story:
    """A Story from space-separated words."""
    return Story(
        ends=tuple(ends.split()),
        updates=frozenset(updates.split()),
        failures=frozenset(failures.split()),
        shows=frozenset(shows.split()),
        runs=runs,
        workflow=workflow,
    )


TRAIN = "open_checkout train"
# Every path a payment can take; each must have a recording that tells its story.
PATHS: dict[str, Story] = {
    # The checkout
    "expired_checkout": story("awaiting_payment expired", shows="timer_fired"),
    "checkout_failed": story(
        "awaiting_payment checkout_failed", failures="failed:APIError refused:CheckoutUnavailable"
    ),
    "payment_failed": story("awaiting_payment payment_failed", shows="signal:payment_event"),
    "late_payment": story("awaiting_payment paid", shows="timer_fired signal:payment_event"),
    "cancel_awaiting_payment": story(
        "awaiting_payment cancelled", "open_checkout cancel", shows="activity:expire_checkout"
    ),
    # The ledger
    "internal_error_resumed": story(
        "awaiting_payment paid",
        "open_checkout resume",
        failures="failed:ValueError",
        shows="NeedsOperator:internal_error",
    ),
    "ledger_failing": story(
        "awaiting_payment paid",
        failures="failed:ConnectionRefusedError",
        shows="NeedsOperator:ledger_failing",
    ),
    # The photos
    "invalid_photos": story("validating paid", TRAIN, failures="refused:InvalidPhotos"),
    "photos_unchecked": story(
        "validating paid", TRAIN, failures="failed:RuntimeError refused:PhotosUnchecked"
    ),
    # Stand-ins send no webhook: the training is polled once overdue (the lost-webhook path).
    "photos_lost": story(
        "training ready",
        TRAIN,
        failures="failed:PhotosLost",
        shows="continued_as_new timer_fired activity:poll_training",
        runs=2,
    ),
    "cancel_paid": story(
        "paid cancelling cancelled", "open_checkout cancel", shows="activity:refund_payment"
    ),
    "cancel_validating": story(
        "validating cancelling cancelled", f"{TRAIN} cancel", failures="refused:Cancelled"
    ),
    # The training
    "cancel_zip": story(
        "training cancelling cancelled", f"{TRAIN} cancel", shows="cancel_requested:build_training_zip"
    ),
    "cancel_training": story(
        "training cancelling cancelled", f"{TRAIN} cancel", shows="activity:cancel_training"
    ),
    "training_not_started": story("awaiting_retry failed", TRAIN, failures="failed:ReplicateRejected"),
    "training_failed_refunded": story(
        "training awaiting_retry failed", TRAIN, shows="signal:training_event activity:refund_payment"
    ),
    "operator_retry": story(
        "awaiting_retry training ready",
        f"{TRAIN} retry_training",
        shows="activity:reopen_version continued_as_new",
        runs=2,
    ),
    "cancel_awaiting_retry": story("awaiting_retry cancelling cancelled", f"{TRAIN} cancel"),
    # A ready model
    "ready_continue_as_new": story("training ready", TRAIN, shows="continued_as_new", runs=2),
    "operator_refund": story("training ready", f"{TRAIN} refund", shows="activity:refund_payment", runs=2),
    "grant": story("training ready", f"{TRAIN} grant_images", shows="activity:record_grant", runs=2),
    "prompts_continue_as_new": story(
        "training ready",
        f"{TRAIN} create_prompt add_images",
        shows="child:PromptWorkflow continued_as_new",
        runs=3,
    ),
    # Add-ons and prompts
    "addon_applied": story("applying applied", shows="activity:apply_addon", workflow="AddonWorkflow"),
    "addon_refunded": story(
        "applying refunded",
        failures="failed:JourneyEnded",
        shows="activity:refund_payment",
        workflow="AddonWorkflow",
    ),
    "prompt_succeeded": story("succeeded", "", shows="activity:copy_images", workflow="PromptWorkflow"),
    "prompt_failed": story("failed", "", workflow="PromptWorkflow"),
}


def _attributes(event: Event) -> Any:
    return next(value for key, value in event.items() if key.endswith("EventAttributes"))


def _decoded(payload: dict[str, Any]) -> Any:
    """A JSON payload's value (None for binary/null)."""
    if base64.b64decode(payload["metadata"]["encoding"]) != b"json/plain":
        return None
    return json.loads(base64.b64decode(payload["data"]))


def _failure_type(failure: dict[str, Any]) -> str:
    return str(failure.get("applicationFailureInfo", {}).get("type", "unknown"))


def _benign(failure: dict[str, Any]) -> bool:
    """A poll's "not finished yet" (left behind when the wait ends another way), not a failure."""
    category = failure.get("applicationFailureInfo", {}).get("category")
    return bool(category == "APPLICATION_ERROR_CATEGORY_BENIGN")


def _facts_of(event: Event, activities: dict[str, str]) -> Iterator[str]:
    kind = event["eventType"].removeprefix("EVENT_TYPE_")
    attrs = _attributes(event)
    match kind:
        case "WORKFLOW_EXECUTION_STARTED" if "searchAttributes" in attrs:
            # Attributes the run started with (the API's first stage, the ones continue-as-new carries).
            for name, payload in attrs["searchAttributes"]["indexedFields"].items():
                yield f"{name}:{_decoded(payload)}"
        case "ACTIVITY_TASK_SCHEDULED":
            activities[event["eventId"]] = attrs["activityType"]["name"]
            yield f"activity:{attrs['activityType']['name']}"
        case "ACTIVITY_TASK_FAILED" if not _benign(attrs["failure"]):
            yield f"failed:{_failure_type(attrs['failure'])}"
        case "ACTIVITY_TASK_TIMED_OUT":
            yield f"failed:timeout:{activities[attrs['scheduledEventId']]}"
        case "ACTIVITY_TASK_CANCEL_REQUESTED":
            yield f"cancel_requested:{activities[attrs['scheduledEventId']]}"
        case "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
            yield f"update:{attrs['acceptedRequest']['input']['name']}"
        case "WORKFLOW_EXECUTION_UPDATE_COMPLETED" if "failure" in attrs["outcome"]:
            yield f"refused:{_failure_type(attrs['outcome']['failure'])}"
        case "WORKFLOW_EXECUTION_SIGNALED":
            yield f"signal:{attrs['signalName']}"
        case "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            for name, payload in attrs["searchAttributes"]["indexedFields"].items():
                yield f"{name}:{_decoded(payload)}"
        case "START_CHILD_WORKFLOW_EXECUTION_INITIATED":
            yield f"child:{attrs['workflowType']['name']}"
        case "TIMER_FIRED":
            yield "timer_fired"
        case "WORKFLOW_EXECUTION_CONTINUED_AS_NEW":
            yield "continued_as_new"
        case "WORKFLOW_EXECUTION_COMPLETED":
            result = _decoded(attrs["result"]["payloads"][0])
            if isinstance(result, dict) and "status" in result:
                yield f"outcome:{result['status']}"


@dataclass
class Shown:
    """What a recording shows: its workflow, its facts in order, and how many runs it took."""

    workflow: str
    facts: list[str] = field(default_factory=list)
    runs: int = 0

    @classmethod
    def of(cls, runs: list[Recording]) -> Shown:
        """Read every run of a recording, oldest first."""
        events = [json.loads(run.file.read_text())["events"] for run in runs]
        started = events[0][0]["workflowExecutionStartedEventAttributes"]
        shown = cls(workflow=started["workflowType"]["name"], runs=len(runs))
        activities: dict[str, str] = {}
        for run in events:
            activities.clear()
            shown.facts += [fact for event in run for fact in _facts_of(event, activities)]
        return shown

    def stages(self) -> tuple[str, ...]:
        """The stages it went through, in order, repeats folded (a prompt's outcome counts as its stage)."""
        stages = [f.split(":", 1)[1] for f in self.facts if f.startswith(("JourneyStage:", "outcome:"))]
        return tuple(stage for stage, _ in groupby(stages))

    def mismatch(self, story: Story) -> list[str]:
        """How it differs from story (empty when it tells that story)."""
        facts = set(self.facts)
        updates = {f.removeprefix("update:") for f in facts if f.startswith("update:")}
        failures = {f for f in facts if f.startswith(("failed:", "refused:"))}
        found = {
            "workflow": (self.workflow, story.workflow),
            "runs": (self.runs, story.runs),
            "last stages": (self.stages()[-len(story.ends) :], story.ends),
            "updates": (updates, story.updates),
            "failures": (failures, story.failures),
            "facts": (story.shows & facts, story.shows),
        }
        return [
            f"{what}: {got!r}, expected {wanted!r}" for what, (got, wanted) in found.items() if got != wanted
        ]


RECORDINGS = recordings()
RECORDED = {
    (path, label): list(runs) for (path, label), runs in groupby(RECORDINGS, key=lambda r: (r.path, r.label))
}


def _id(key: tuple[str, str]) -> str:
    return ".".join(part for part in key if part)


def test_every_path_has_a_recorded_history() -> None:
    missing = sorted(set(PATHS) - {path for path, _ in RECORDED})
    assert not missing, (
        f"no recorded history for: {', '.join(missing)} (python -m tests.replay.record_histories)"
    )


def test_the_recorder_records_every_path() -> None:
    recorded = set(standin_paths.PATHS) | stack_paths.PATHS
    assert recorded == set(PATHS), f"recorder and PATHS disagree on: {sorted(recorded ^ set(PATHS))}"


def test_every_recording_is_of_a_known_path_and_has_every_run() -> None:
    unknown = sorted({_id(key) for key in RECORDED if key[0] not in PATHS})
    assert not unknown, f"recordings of no known path: {', '.join(unknown)}"
    gaps = [
        _id(key) for key, runs in RECORDED.items() if [r.run for r in runs] != list(range(1, len(runs) + 1))
    ]
    assert not gaps, f"runs missing in: {', '.join(gaps)}"


@pytest.mark.parametrize("key", RECORDED, ids=_id)
def test_recording_shows_its_path(key: tuple[str, str]) -> None:
    story = PATHS.get(key[0])
    assert story is not None, f"{_id(key)} is the recording of no known path"
    mismatch = Shown.of(RECORDED[key]).mismatch(story)
    assert not mismatch, f"{_id(key)} does not show its path:\n" + "\n".join(mismatch)


def test_no_recording_would_pass_for_another_path() -> None:
    """The stories tell the paths apart: a recording saved under the wrong name fails."""
    shown = {key: Shown.of(runs) for key, runs in RECORDED.items()}
    passing = [
        f"{_id(key)} passes as {path}"
        for key, recording in shown.items()
        for path, story in PATHS.items()
        if path != key[0] and not recording.mismatch(story)
    ]
    assert not passing, "\n".join(passing)


CODEC = EncryptionCodec([PayloadKey("replay", os.urandom(32))])


async def _encrypted(history: WorkflowHistory) -> WorkflowHistory:
    encrypted = await convert_history(history, CODEC.encode)
    assert any(is_encrypted(p) for event in encrypted.events for p in payloads_in(event))
    return encrypted


@pytest.mark.parametrize("encrypted", [False, True], ids=["as-saved", "encrypted"])
@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda r: r.file.stem)
async def test_history_replays_without_nondeterminism(recording: Recording, encrypted: bool) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(CODEC))
    history = WorkflowHistory.from_json(recording.file.stem, recording.file.read_text())
    if encrypted:
        history = await _encrypted(history)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{recording.file.name}: {result.replay_failure}"


async def test_an_encrypted_history_needs_the_codec_to_replay() -> None:
    recording = next(r for r in RECORDINGS if r.path == "prompt_succeeded")
    history = await _encrypted(WorkflowHistory.from_json(recording.file.stem, recording.file.read_text()))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(None))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
