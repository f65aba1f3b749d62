"""Stand-ins for the production activities, registered under their names (the method names in `activities/`).

`StandIns` answer as a healthy ledger, bucket, Stripe and Replicate would; each fault below is a subclass
that re-declares the one activity that goes wrong, under the same name.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.images import training_zip_key
from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, TASK_QUEUE
from ecomdream.contracts.payment import (
    AddonApplied,
    AddonApply,
    CheckoutOpen,
    CheckoutOpened,
    PaymentUpdate,
    RefundRequest,
    RefundResult,
)
from ecomdream.contracts.training import (
    Cleanup,
    PhotoCheck,
    PhotoCheckResult,
    TrainingCreate,
    TrainingPoll,
    TrainingStatus,
    VersionCreate,
    VersionOutcome,
    ZipRequest,
    ZipResult,
)
from workflows import WORKFLOWS

AMOUNT = 1300
MAIN = (
    "open_checkout",
    "set_payment_status",
    "expire_checkout",
    "refund_payment",
    "apply_addon",
    "create_version",
    "record_version_outcome",
    "reopen_version",
    "check_photos",
    "build_training_zip",
    "delete_objects",
)
# Trainings run on the Replicate "other" queue (only prediction creates have a queue of their own).
REPLICATE_OTHER = ("create_training", "poll_training", "cancel_training")


class StandIns:
    """Every activity the stand-in paths reach, answering as a healthy system does."""

    @activity.defn(name="open_checkout")
    async def open_checkout(self, request: CheckoutOpen) -> CheckoutOpened:
        """A Stripe checkout session for the payment."""
        session_id = f"cs_test_{request.payment_id.hex[:24]}"
        return CheckoutOpened(
            payment_id=request.payment_id,
            url=f"https://checkout.stripe.com/c/pay/{session_id}",
            session_id=session_id,
            amount_total=AMOUNT,
            currency="usd",
            promocode_applied=False,
        )

    @activity.defn(name="set_payment_status")
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        """The ledger takes the new status."""

    @activity.defn(name="expire_checkout")
    async def expire_checkout(self, payment_id: uuid.UUID) -> bool:
        """The checkout is closed before anyone paid."""
        return True

    @activity.defn(name="refund_payment")
    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        """Stripe refunds in full."""
        return RefundResult(refund_id=f"re_{request.payment_id.hex[:24]}", amount=AMOUNT)

    @activity.defn(name="apply_addon")
    async def apply_addon(self, request: AddonApply) -> AddonApplied:
        """The model's journey takes the images."""
        return AddonApplied(images_quota=request.grant.images)

    @activity.defn(name="create_version")
    async def create_version(self, version: VersionCreate) -> None:
        """The model's row is written."""

    @activity.defn(name="record_version_outcome")
    async def record_version_outcome(self, outcome: VersionOutcome) -> None:
        """The model's row shows how its training ended."""

    @activity.defn(name="reopen_version")
    async def reopen_version(self, version_id: uuid.UUID) -> None:
        """The model's row shows it training again."""

    @activity.defn(name="check_photos")
    async def check_photos(self, check: PhotoCheck) -> PhotoCheckResult:
        """Every photo is usable."""
        return PhotoCheckResult()

    @activity.defn(name="build_training_zip")
    async def build_training_zip(self, request: ZipRequest) -> ZipResult:
        """The photos are in the training zip."""
        key = training_zip_key(request.version_id)
        return ZipResult(key=key, size=len(request.photos) * 100_000, images=len(request.photos))

    @activity.defn(name="delete_objects")
    async def delete_objects(self, cleanup: Cleanup) -> int:
        """The customer's photos are deleted."""
        return len(cleanup.prefixes)

    @activity.defn(name="create_training")
    async def create_training(self, request: TrainingCreate) -> TrainingStatus:
        """Replicate starts the training."""
        return TrainingStatus(training_id=f"tr_{request.version_id.hex[:20]}", status="starting")

    @activity.defn(name="poll_training")
    async def poll_training(self, poll: TrainingPoll) -> TrainingStatus:
        """The training has succeeded."""
        return TrainingStatus(
            training_id=poll.training_id,
            status="succeeded",
            model_version=f"ecomdream/{poll.version_id.hex[:12]}:{poll.training_id}",
        )

    @activity.defn(name="cancel_training")
    async def cancel_training(self, training_id: str) -> None:
        """Replicate cancels the training."""

    def of(self, names: tuple[str, ...]) -> list[Callable[..., Any]]:
        """The bound activities with these names (a subclass's overrides included)."""
        return [getattr(self, name) for name in names]


class SlowLedgerAtExpiry(StandIns):
    """Recording the expiry hangs (the database is unreachable) until the late payment has arrived."""

    def __init__(self) -> None:
        self.expiring = asyncio.Event()
        self.money_in = asyncio.Event()

    @activity.defn(name="set_payment_status")
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        """Hangs on "expired" until released."""
        if update.status == "expired":
            self.expiring.set()
            await self.money_in.wait()


class PhotoCheckDown(StandIns):
    """The photo check cannot read the bucket."""

    @activity.defn(name="check_photos")
    async def check_photos(self, check: PhotoCheck) -> PhotoCheckResult:
        """Always fails (retried)."""
        raise RuntimeError("the bucket does not answer")


class PhotosLostOnce(StandIns):
    """A staged photo is gone when the first zip is built; the second upload is complete."""

    def __init__(self) -> None:
        self.zips = 0

    @activity.defn(name="build_training_zip")
    async def build_training_zip(self, request: ZipRequest) -> ZipResult:
        """Fails once with the names of the lost photos."""
        self.zips += 1
        if self.zips == 1:
            lost = [request.photos[1].name]
            raise ApplicationError("staged photos are missing", lost, type="PhotosLost", non_retryable=True)
        return await super().build_training_zip(request)


class ReplicateRefuses(StandIns):
    """Replicate refuses to start the training."""

    @activity.defn(name="create_training")
    async def create_training(self, request: TrainingCreate) -> TrainingStatus:
        """Always refused (not retried)."""
        raise ApplicationError(
            "Replicate refused the training: input_images is not a valid zip",
            type="ReplicateRejected",
            non_retryable=True,
        )


class SlowPhotoCheck(StandIns):
    """The photo check takes until the recorder lets it finish."""

    def __init__(self) -> None:
        self.checking = asyncio.Event()
        self.finish = asyncio.Event()

    @activity.defn(name="check_photos")
    async def check_photos(self, check: PhotoCheck) -> PhotoCheckResult:
        """Every photo is usable, once released."""
        self.checking.set()
        await self.finish.wait()
        return PhotoCheckResult()


class EndlessZip(StandIns):
    """The zip is built until it is cancelled (it heartbeats, as the real one does)."""

    def __init__(self) -> None:
        self.zipping = asyncio.Event()
        self.cancelled = asyncio.Event()

    @activity.defn(name="build_training_zip")
    async def build_training_zip(self, request: ZipRequest) -> ZipResult:
        """Never finishes by itself."""
        self.zipping.set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class LedgerBug(StandIns):
    """Recording the payment fails with an error retrying cannot fix, until an operator has fixed it."""

    def __init__(self) -> None:
        self.fixed = False

    @activity.defn(name="set_payment_status")
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        """A ValueError (not retried) until fixed."""
        if not self.fixed:
            raise ValueError(f"payment {update.payment_id} has no plan row")


class LedgerDown(StandIns):
    """The database is unreachable until the recorder says it is back."""

    def __init__(self) -> None:
        self.down = True

    @activity.defn(name="set_payment_status")
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        """Fails (retried) while down."""
        if self.down:
            raise ConnectionRefusedError("could not connect to the database")


class JourneyEnded(StandIns):
    """The model's journey can no longer take images."""

    @activity.defn(name="apply_addon")
    async def apply_addon(self, request: AddonApply) -> AddonApplied:
        """Refused, as the real activity reports a journey that ended."""
        raise ApplicationError("The model's journey has ended", type="JourneyEnded", non_retryable=True)


@asynccontextmanager
async def serving(client: Client, standins: StandIns) -> AsyncIterator[None]:
    """Workers on the production task queues: the workflows and the stand-ins."""
    async with (
        Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=WORKFLOWS,
            activities=standins.of(MAIN),
            # A cancelled activity learns it at its next heartbeat: let heartbeats through at once.
            max_heartbeat_throttle_interval=timedelta(seconds=1),
        ),
        Worker(client, task_queue=REPLICATE_OTHER_TASK_QUEUE, activities=standins.of(REPLICATE_OTHER)),
    ):
        yield
