"""Durable contracts: the payloads stored in Temporal histories. Frozen; add fields only with defaults."""

TASK_QUEUE = "ecomdream"


def journey_id(payment_id: object) -> str:
    """Workflow id of the journey bought with an initial payment."""
    return f"journey-{payment_id}"


def addon_id(payment_id: object) -> str:
    """Workflow id of an add-on pack purchase."""
    return f"addon-{payment_id}"


def prompt_workflow_id(prompt_id: object) -> str:
    """Workflow id of one prompt's generation."""
    return f"prompt-{prompt_id}"


def deletion_workflow_id(version_id: object) -> str:
    """Workflow id of a model's deletion (one per version: a repeated request finds the same run)."""
    return f"deletion-{version_id}"


# The daily retention run (a Temporal Schedule; each run's id is this plus its time).
RETENTION_SCHEDULE_ID = "retention"


# Every Replicate call runs on one of these queues. Each has a server-side rate limit that holds for all
# workers together (set by every worker at start, see worker.py), under Replicate's own limit for the kind
# of call: creating predictions (Replicate's 600-a-minute limit) on one, every other call (trainings, polls,
# cancels, deletions: the 3,000-a-minute limit) on the other, so a prediction never waits behind them.
REPLICATE_PREDICT_TASK_QUEUE = "ecomdream-replicate-predict"
REPLICATE_OTHER_TASK_QUEUE = "ecomdream-replicate-other"


def staging_prefix(payment_id: object) -> str:
    """Where a payment's uploaded photos are staged until training ends."""
    return f"staging/{payment_id}/"
