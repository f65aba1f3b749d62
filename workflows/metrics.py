"""Business metrics emitted from workflows through Temporal's replay-safe metric meter (worker endpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import exceptions, workflow
from temporalio.common import MetricMeter

with workflow.unsafe.imports_passed_through():
    from ecomdream.contracts.payment import Attention


@dataclass(frozen=True)
class Counter:
    """A business counter: its name (Prometheus adds `_total`) and its help text."""

    name: str
    description: str

    def add(self, labels: dict[str, str]) -> None:
        """Count one event, from inside a workflow."""
        workflow.metric_meter().create_counter(self.name, self.description).add(1, labels)


OPERATOR_ATTENTION = Counter(
    "ecomdream_operator_attention", "times a workflow raised NeedsOperator, by reason"
)
DEADLINES_MISSED = Counter(
    "ecomdream_deadlines_missed", "trainings and predictions given up at their deadline"
)
PAYMENTS = Counter("ecomdream_payments", "checkouts by how they ended (outcome `paid` is a sale)")

# The series alert rules watch, with the workflow type that emits each. A counter series that appears with its
# first event already at 1 never shows an increase to Prometheus, so the worker creates these at 0 on start.
WATCHED: tuple[tuple[Counter, str, dict[str, str]], ...] = (
    *(
        (OPERATOR_ATTENTION, workflow_type, {"reason": attention.value})
        for workflow_type in ("JourneyWorkflow", "AddonWorkflow")
        for attention in Attention
    ),
    (DEADLINES_MISSED, "JourneyWorkflow", {"work": "training"}),
    (DEADLINES_MISSED, "PromptWorkflow", {"work": "prediction"}),
    (PAYMENTS, "JourneyWorkflow", {"kind": "plan", "outcome": "paid"}),
    (PAYMENTS, "AddonWorkflow", {"kind": "addon", "outcome": "paid"}),
)


def start_at_zero(meter: MetricMeter, namespace: str, task_queue: str) -> None:
    """Create every watched series at 0, with the attributes a workflow's own meter adds to it."""
    for counter, workflow_type, labels in WATCHED:
        scoped = meter.with_additional_attributes(
            {"namespace": namespace, "task_queue": task_queue, "workflow_type": workflow_type}
        )
        scoped.create_counter(counter.name, counter.description).add(0, labels)


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


def operator_attention(reason: str) -> None:
    """A workflow raised `NeedsOperator` (one count per raise; a flag already up is not counted again)."""
    OPERATOR_ATTENTION.add({"reason": reason})


def deadline_missed(work: str, err: exceptions.ActivityError) -> None:
    """The watch on a training or prediction failed with err: counted when its deadline ran out."""
    if isinstance(err.cause, exceptions.TimeoutError):
        DEADLINES_MISSED.add({"work": work})


def payment(kind: str, outcome: str) -> None:
    """A checkout ended (kind `plan` or `addon`), as recorded in the ledger."""
    PAYMENTS.add({"kind": kind, "outcome": outcome})
