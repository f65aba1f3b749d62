"""ORM models; importing this package registers every table on `Base.metadata`."""

from ecomdream.models.access import IdempotentRequest, Share
from ecomdream.models.events import CustomerEventRow, Deletion, EmailState
from ecomdream.models.payment import Payment, PaymentStatus, Plan, QuotaGrant
from ecomdream.models.prompt import Image, Prompt, PromptStatus
from ecomdream.models.version import Version, VersionStatus

__all__ = [
    "CustomerEventRow",
    "Deletion",
    "EmailState",
    "IdempotentRequest",
    "Image",
    "Payment",
    "PaymentStatus",
    "Plan",
    "Prompt",
    "PromptStatus",
    "QuotaGrant",
    "Share",
    "Version",
    "VersionStatus",
]
