"""Workflows: thin, deterministic checklists of activities, timers and waits."""

from workflows.addon import AddonWorkflow
from workflows.deletion import DeletionWorkflow, RetentionWorkflow
from workflows.journey import JourneyWorkflow
from workflows.notices import NoticeWorkflow
from workflows.prompt import PromptWorkflow

WORKFLOWS: list[type] = [
    JourneyWorkflow,
    AddonWorkflow,
    PromptWorkflow,
    NoticeWorkflow,
    DeletionWorkflow,
    RetentionWorkflow,
]

__all__ = [
    "WORKFLOWS",
    "AddonWorkflow",
    "DeletionWorkflow",
    "JourneyWorkflow",
    "NoticeWorkflow",
    "PromptWorkflow",
    "RetentionWorkflow",
]
