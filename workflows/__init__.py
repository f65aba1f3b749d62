"""Workflows: thin, deterministic checklists of activities, timers and waits."""

from workflows.addon import AddonWorkflow
from workflows.journey import JourneyWorkflow

WORKFLOWS: list[type] = [JourneyWorkflow, AddonWorkflow]

__all__ = ["WORKFLOWS", "AddonWorkflow", "JourneyWorkflow"]
