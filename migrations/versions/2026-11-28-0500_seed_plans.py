"""Seed the two plans of the original service: the initial training plan and the add-on image pack.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

plans = sa.table(
    "plans",
    sa.column("id", sa.Integer),
    sa.column("is_init", sa.Boolean),
    sa.column("price", sa.Integer),
    sa.column("currency", sa.String),
    sa.column("plan_name", sa.String),
    sa.column("plan_description", sa.String),
    sa.column("feature_amount_images", sa.Integer),
)


def upgrade() -> None:
    op.bulk_insert(
        plans,
        [
            {
                "id": 1,
                "is_init": True,
                "price": 1300,
                "currency": "usd",
                "plan_name": "basic_init",
                "plan_description": "Train your own model on 5-30 photos and generate 100 images with it.",
                "feature_amount_images": 100,
            },
            {
                "id": 2,
                "is_init": False,
                "price": 1300,
                "currency": "usd",
                "plan_name": "basic_extra_creds",
                "plan_description": "1000 more images for a model you have already trained.",
                "feature_amount_images": 1000,
            },
        ],
    )
    # Explicit ids above leave the identity sequence behind; move it past them.
    op.execute("SELECT setval(pg_get_serial_sequence('plans', 'id'), (SELECT max(id) FROM plans))")


def downgrade() -> None:
    op.execute("DELETE FROM plans WHERE plan_name IN ('basic_init', 'basic_extra_creds')")
