"""Business metrics emitted from workflows through Temporal's replay-safe metric meter (worker endpoint)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow


def journey_stage(stage: str) -> None:
    """A journey entered stage."""
    workflow.metric_meter().create_counter("ecomdream_journeys", "journey stage transitions").add(
        1, {"stage": stage}
    )


def training(outcome: str, duration: timedelta | None = None) -> None:
    """A training started, succeeded or failed (with how long it took)."""
    meter = workflow.metric_meter()
    meter.create_counter("ecomdream_trainings", "trainings by outcome").add(1, {"outcome": outcome})
    if duration is not None:
        meter.create_histogram_float(
            "ecomdream_training_duration_seconds", "time from submission to the end of training", "seconds"
        ).record(duration.total_seconds(), {"outcome": outcome})


def prompt(outcome: str, images: int) -> None:
    """A prompt ended; images generated are counted separately."""
    meter = workflow.metric_meter()
    meter.create_counter("ecomdream_prompts", "prompts by outcome").add(1, {"outcome": outcome})
    if images:
        meter.create_counter("ecomdream_images_generated", "images delivered to customers").add(images)


def refund() -> None:
    """A payment was refunded."""
    workflow.metric_meter().create_counter("ecomdream_refunds", "payments refunded").add(1)


def duplicate_webhook(provider: str) -> None:
    """A webhook delivery the workflow had already seen."""
    workflow.metric_meter().create_counter("ecomdream_webhooks", "webhook deliveries by outcome").add(
        1, {"provider": provider, "outcome": "duplicate"}
    )
