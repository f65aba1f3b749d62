"""Customer lifecycle: callback URL and secret on payments, the customer-event outbox, deletion receipts,
expired images (retention).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_VERSION_STATUSES = "status IN ('validating', 'training', 'ready', 'failed')"
NEW_VERSION_STATUSES = "status IN ('validating', 'training', 'ready', 'failed', 'deleted')"


def upgrade() -> None:
    op.add_column("payments", sa.Column("callback_url", sa.String(length=2048), nullable=True))
    op.add_column("payments", sa.Column("webhook_secret", sa.Text(), nullable=True))
    op.drop_constraint(op.f("ck_versions_status_known"), "versions", type_="check")
    op.create_check_constraint(op.f("ck_versions_status_known"), "versions", NEW_VERSION_STATUSES)
    op.create_table(
        "customer_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("callback_state", sa.String(length=16), nullable=True),
        sa.Column("callback_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("callback_last_error", sa.Text(), nullable=True),
        sa.Column("callback_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("email_state", sa.String(length=16), nullable=True),
        sa.Column("email_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "callback_state IS NULL OR callback_state IN ('pending', 'delivered', 'failing', 'gave_up')",
            name=op.f("ck_customer_events_callback_state_known"),
        ),
        sa.CheckConstraint(
            "email_state IS NULL OR email_state IN ('pending', 'sent', 'failing', 'gave_up', 'no_address')",
            name=op.f("ck_customer_events_email_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_customer_events_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_customer_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_customer_events_event_id")),
    )
    op.create_index(op.f("ix_customer_events_payment_id"), "customer_events", ["payment_id"], unique=False)
    op.create_index(op.f("ix_customer_events_version_id"), "customer_events", ["version_id"], unique=False)
    op.create_table(
        "deletions",
        sa.Column("receipt_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=8), server_default="running", nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("state IN ('running', 'done')", name=op.f("ck_deletions_state_known")),
        sa.PrimaryKeyConstraint("receipt_id", name=op.f("pk_deletions")),
        sa.UniqueConstraint("version_id", name=op.f("uq_deletions_version_id")),
    )
    op.create_index(op.f("ix_deletions_payment_id"), "deletions", ["payment_id"], unique=False)
    op.add_column("images", sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_images_created_at_live",
        "images",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("expired_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_images_created_at_live", table_name="images")
    op.drop_column("images", "expired_at")
    op.drop_index(op.f("ix_deletions_payment_id"), table_name="deletions")
    op.drop_table("deletions")
    op.drop_index(op.f("ix_customer_events_version_id"), table_name="customer_events")
    op.drop_index(op.f("ix_customer_events_payment_id"), table_name="customer_events")
    op.drop_table("customer_events")
    op.drop_constraint(op.f("ck_versions_status_known"), "versions", type_="check")
    op.create_check_constraint(op.f("ck_versions_status_known"), "versions", OLD_VERSION_STATUSES)
    op.drop_column("payments", "webhook_secret")
    op.drop_column("payments", "callback_url")
