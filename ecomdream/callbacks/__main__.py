"""`python -m ecomdream.callbacks reseal`: seal every callback secret again with the newest payload key.

Run it after a new payload key became the newest (step 3 of "Rotating the payload key" in OPERATIONS.md) and
before an old key is removed: a secret sealed with a removed key no longer opens, and its callbacks stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from sqlalchemy import select

from ecomdream.callbacks.sealing import SecretBox
from ecomdream.config import Settings
from ecomdream.db.session import SessionMaker, create_engine, create_sessionmaker, transaction
from ecomdream.models import Payment

BATCH = 500
log = logging.getLogger("ecomdream.callbacks")


async def reseal(sessionmaker: SessionMaker, box: SecretBox) -> int:
    """Seal every secret not sealed with the newest key again; returns how many were."""
    current = f"v1:{box.current_key_id}:"
    done = 0
    while True:
        async with transaction(sessionmaker) as session:
            payments = (
                await session.scalars(
                    select(Payment)
                    .where(
                        Payment.webhook_secret.is_not(None), Payment.webhook_secret.not_like(f"{current}%")
                    )
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for payment in payments:
                assert payment.webhook_secret is not None
                payment.webhook_secret = box.seal(box.open(payment.webhook_secret, payment.id), payment.id)
        done += len(payments)
        if len(payments) < BATCH:
            return done


def main() -> None:
    """Parse the command and run it against ECOMDREAM_DATABASE_URL."""
    parser = argparse.ArgumentParser(prog="python -m ecomdream.callbacks")
    parser.add_argument("command", choices=["reseal"], help="seal every callback secret with the newest key")
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    box = SecretBox.from_settings(settings)

    async def run() -> int:
        engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
        try:
            return await reseal(create_sessionmaker(engine), box)
        finally:
            await engine.dispose()

    log.info("resealed %d callback secret(s) with key %r", asyncio.run(run()), box.current_key_id)


if __name__ == "__main__":
    main()
