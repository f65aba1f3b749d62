"""Custom search attributes: what operators filter journeys by in the Temporal Web UI. Never personal data."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PAYMENT_ID = SearchAttributeKey.for_keyword("PaymentId")
VERSION_ID = SearchAttributeKey.for_keyword("VersionId")
JOURNEY_STAGE = SearchAttributeKey.for_keyword("JourneyStage")
PLAN_NAME = SearchAttributeKey.for_keyword("PlanName")

SEARCH_ATTRIBUTE_NAMES = (PAYMENT_ID.name, VERSION_ID.name, JOURNEY_STAGE.name, PLAN_NAME.name)
