"""Custom search attributes: what operators filter journeys by in the Temporal Web UI. Never personal data."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PAYMENT_ID = SearchAttributeKey.for_keyword("PaymentId")
VERSION_ID = SearchAttributeKey.for_keyword("VersionId")
JOURNEY_STAGE = SearchAttributeKey.for_keyword("JourneyStage")
PLAN_NAME = SearchAttributeKey.for_keyword("PlanName")
# Set (to an `Attention` value) while an operator must act: a refund Stripe refused, a ledger write failing
# for minutes, an internal error. Unset otherwise, so `NeedsOperator IS NOT NULL` lists the work to do.
NEEDS_OPERATOR = SearchAttributeKey.for_keyword("NeedsOperator")

SEARCH_ATTRIBUTE_NAMES = (
    PAYMENT_ID.name,
    VERSION_ID.name,
    JOURNEY_STAGE.name,
    PLAN_NAME.name,
    NEEDS_OPERATOR.name,
)
