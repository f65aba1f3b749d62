"""Workflows: thin, deterministic checklists of activities, timers and waits."""

from workflows.addon import AddonWorkflow
from workflows.journey import JourneyWorkflow
from workflows.notices import NoticeWorkflow
from workflows.prompt import PromptWorkflow

WORKFLOWS: list[type] = [JourneyWorkflow, AddonWorkflow, PromptWorkflow, NoticeWorkflow]

__all__ = ["WORKFLOWS", "AddonWorkflow", "JourneyWorkflow", "NoticeWorkflow", "PromptWorkflow"]
