"""Activities, grouped in classes by the dependencies they need; `build_activities` wires them."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from activities.callbacks import CallbackActivities
from activities.deletion import DeletionActivities, RetentionActivities
from activities.events import EventActivities
from activities.images import ImageActivities, PhotoRules
from activities.mail import MailActivities
from activities.payments import CheckoutSetup, PaymentActivities
from activities.prompts import MAX_IMAGE_BYTES, PromptActivities
from activities.records import RecordActivities
from activities.replicate import PredictionActivities, ReplicateActivities, TrainingSetup
from ecomdream.callbacks.sealing import SecretBox
from ecomdream.clients.callbacks import create_callback_sender
from ecomdream.clients.deliveries import create_deliveries
from ecomdream.clients.replicate import create_replicate_client
from ecomdream.clients.smtp import SmtpServer
from ecomdream.clients.storage import Storage
from ecomdream.clients.stripe import create_stripe_client
from ecomdream.config import Settings
from ecomdream.db.session import create_engine, create_sessionmaker


@dataclass
class ActivitySet:
    """Activities for the main task queue and for the two rate-limited Replicate queues."""

    main: list[Callable[..., Any]]
    replicate_predict: list[Callable[..., Any]]
    replicate_other: list[Callable[..., Any]]


def image_activities(settings: Settings, storage: Storage, stack: AsyncExitStack) -> ImageActivities:
    """The photo activities on a Pillow pool of one thread per core; the pool shuts down with stack."""
    cpus = os.cpu_count() or 2
    executor = stack.enter_context(ThreadPoolExecutor(max_workers=cpus, thread_name_prefix="pillow"))
    rules = PhotoRules(
        min_side=settings.photo_min_side,
        max_pixels=int(settings.photo_max_megapixels * 1_000_000),
        max_side=settings.photo_max_side,
    )
    # Photos in memory at once (read ahead of the zip writer): one per core and one more, which keeps the
    # training zip's peak memory flat and under 100 MB while every core normalises.
    return ImageActivities(storage, executor, rules, concurrency=cpus + 1)


async def build_activities(settings: Settings, stack: AsyncExitStack) -> ActivitySet:
    """Every activity bound to its clients; the clients close with stack."""
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=settings.database_pool_size)
    stack.push_async_callback(engine.dispose)
    sessionmaker = create_sessionmaker(engine)
    storage = await Storage.from_settings(settings, stack)
    images = image_activities(settings, storage, stack)
    payments = PaymentActivities(
        sessionmaker,
        create_stripe_client(settings, stack),
        CheckoutSetup(success_url=settings.checkout_success_url, cancel_url=settings.checkout_cancel_url),
    )
    records = RecordActivities(sessionmaker)
    setup = TrainingSetup(
        owner=settings.replicate_owner,
        trainer=settings.replicate_trainer,
        trainer_version=settings.replicate_trainer_version,
        hardware=settings.replicate_hardware,
        steps=settings.training_steps,
        webhook_base=f"{settings.public_api_url.rstrip('/')}/api/v1/replicate/webhook",
    )
    replicate_client = create_replicate_client(settings, stack=stack)
    replicate = ReplicateActivities(replicate_client, storage, sessionmaker, setup)
    predictions = PredictionActivities(replicate_client, sessionmaker, setup.webhook_base)
    prompts = PromptActivities(sessionmaker, storage, create_deliveries(settings, MAX_IMAGE_BYTES, stack))
    events = EventActivities(sessionmaker)
    callbacks = CallbackActivities(
        sessionmaker, create_callback_sender(settings, stack), SecretBox.from_settings(settings)
    )
    mail = MailActivities(sessionmaker, SmtpServer.from_settings(settings), settings.public_api_url)
    deletion = DeletionActivities(sessionmaker, storage)
    retention = RetentionActivities(sessionmaker, storage)
    return ActivitySet(
        main=[
            payments.open_checkout,
            payments.apply_addon,
            payments.set_payment_status,
            payments.refund_payment,
            payments.record_quota,
            payments.record_grant,
            payments.expire_checkout,
            records.create_version,
            records.record_version_outcome,
            records.reopen_version,
            images.check_photos,
            images.build_training_zip,
            images.delete_objects,
            prompts.record_prompt_started,
            prompts.copy_images,
            prompts.record_prompt_finished,
            events.record_event,
            callbacks.deliver_callback,
            callbacks.give_up_callback,
            mail.send_event_email,
            mail.give_up_email,
            deletion.begin_deletion,
            deletion.stop_journey,
            deletion.delete_training_files,
            deletion.delete_generated,
            deletion.delete_records,
            deletion.finish_deletion,
            retention.expire_images,
            retention.delete_failed_uploads,
        ],
        replicate_predict=[predictions.create_prediction],
        replicate_other=[
            replicate.create_training,
            replicate.poll_training,
            replicate.cancel_training,
            replicate.delete_trained_model,
            predictions.poll_prediction,
            predictions.cancel_prediction,
        ],
    )
