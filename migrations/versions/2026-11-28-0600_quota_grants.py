"""Quota grants: the ledger of images added to a model by an operator.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_grants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=True),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("images > 0", name=op.f("ck_quota_grants_images_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_quota_grants_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name=op.f("fk_quota_grants_version_id_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_grants")),
    )
    op.create_index(op.f("ix_quota_grants_payment_id"), "quota_grants", ["payment_id"], unique=False)
    op.create_index(op.f("ix_quota_grants_version_id"), "quota_grants", ["version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_quota_grants_version_id"), table_name="quota_grants")
    op.drop_index(op.f("ix_quota_grants_payment_id"), table_name="quota_grants")
    op.drop_table("quota_grants")
