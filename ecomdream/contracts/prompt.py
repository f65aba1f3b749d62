"""Prompt contracts: the create_prompt update, the PromptWorkflow and its activities."""

from __future__ import annotations

import uuid

from pydantic import Field

from ecomdream.contracts.payment import Contract


class PromptSpec(Contract):
    """What the customer asked for (the trigger token and class are already in `prompt`)."""

    prompt: str = Field(min_length=1, max_length=1000)
    negative_prompt: str | None = None
    num_outputs: int = Field(ge=1, le=4)
    width: int = 1024
    height: int = 1024
    seed: int | None = None
    guidance_scale: float | None = None
    num_inference_steps: int | None = None


class PromptRequest(Contract):
    """The journey's `create_prompt` update."""

    prompt_id: uuid.UUID
    spec: PromptSpec
    expected_seconds: float = Field(
        default=10.0, gt=0, description="How long a prediction usually takes: only its webhook is awaited"
    )
    poll_seconds: float = Field(
        default=5.0, gt=0, description="Once it is overdue: the longest gap between two polls"
    )
    deadline_seconds: float = Field(default=600.0, gt=0)


class PromptInput(Contract):
    """Start input of a PromptWorkflow."""

    prompt_id: uuid.UUID
    version_id: uuid.UUID
    model_version: str
    spec: PromptSpec
    expected_seconds: float = 10.0
    poll_seconds: float = 5.0
    deadline_seconds: float = 600.0


class PromptOutcome(Contract):
    """How a prompt ended: images generated (charged to the quota) or failed (free)."""

    prompt_id: uuid.UUID
    status: str
    images: int = 0
    error: str | None = None


class PredictionStatus(Contract):
    """A prediction's state as Replicate reports it."""

    prediction_id: str
    status: str
    output: tuple[str, ...] = ()
    error: str | None = None
    predict_time: float | None = None

    @property
    def finished(self) -> bool:
        """Whether Replicate will not change it any more."""
        return self.status in {"succeeded", "failed", "canceled", "aborted"}


class PredictionEvent(Contract):
    """A verified Replicate webhook about a prompt's prediction (deduplicated by webhook id)."""

    webhook_id: str
    prediction: PredictionStatus


class PredictionCreate(Contract):
    """Activity input: create the prediction (one per prompt, even under retries)."""

    prompt_id: uuid.UUID
    model_version: str
    spec: PromptSpec


class PredictionPoll(Contract):
    """Activity input: look at a prediction once."""

    prediction_id: str


class CopiedImage(Contract):
    """One generated image now in our bucket, with its real size."""

    position: int
    key: str
    width: int
    height: int


class ImageCopy(Contract):
    """Activity input: copy the prediction's outputs into our bucket."""

    prompt_id: uuid.UUID
    version_id: uuid.UUID
    urls: tuple[str, ...]
    # Opaque object keys (no extension), one per output, chosen by the workflow: image URLs name no ids.
    keys: tuple[str, ...]


class PromptStarted(Contract):
    """Activity input: record the prompt as running."""

    prompt_id: uuid.UUID
    version_id: uuid.UUID
    spec: PromptSpec


class PromptFinished(Contract):
    """Activity input: record the prompt's end (and its images) in one transaction."""

    prompt_id: uuid.UUID
    version_id: uuid.UUID
    prediction_id: str | None = None
    images: tuple[CopiedImage, ...] = ()
    error: str | None = None
    predict_time: float | None = None
