"""Initial schema: plans, payments, versions, prompts, images

Revision ID: 0001
Revises:
Create Date: 2026-11-28 04:57:52.664258
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("is_init", sa.Boolean(), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="usd", nullable=False),
        sa.Column("plan_name", sa.String(length=100), nullable=False),
        sa.Column("plan_description", sa.String(length=500), nullable=False),
        sa.Column("feature_amount_images", sa.Integer(), nullable=False),
        sa.Column("is_deprecated", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("feature_amount_images > 0", name=op.f("ck_plans_images_positive")),
        sa.CheckConstraint("price >= 0", name=op.f("ck_plans_price_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("plan_name", name=op.f("uq_plans_plan_name")),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("amount_total", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("promocode_id", sa.String(length=255), nullable=True),
        sa.Column("session_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.String(length=2048), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("refund_id", sa.String(length=255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'paid', 'expired', 'failed', 'refunded')",
            name=op.f("ck_payments_status_known"),
        ),
        sa.CheckConstraint(
            "amount_paid IS NULL OR amount_paid >= 0", name=op.f("ck_payments_amount_paid_not_negative")
        ),
        sa.CheckConstraint("amount_total >= 0", name=op.f("ck_payments_amount_total_not_negative")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_payments_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("session_id", name=op.f("uq_payments_session_id")),
    )
    op.create_index(op.f("ix_payments_payment_intent_id"), "payments", ["payment_intent_id"], unique=False)
    op.create_index(op.f("ix_payments_plan_id"), "payments", ["plan_id"], unique=False)
    op.create_index(op.f("ix_payments_version_id"), "payments", ["version_id"], unique=False)
    op.create_table(
        "versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="validating", nullable=False),
        sa.Column("class_name", sa.String(length=40), nullable=False),
        sa.Column("trigger_token", sa.String(length=32), nullable=False),
        sa.Column("images_count", sa.Integer(), nullable=True),
        sa.Column("training_zip_key", sa.String(length=1024), nullable=True),
        sa.Column("training_id", sa.String(length=255), nullable=True),
        sa.Column("model_version", sa.String(length=255), nullable=True),
        sa.Column("progress", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("images_quota", sa.Integer(), server_default="0", nullable=False),
        sa.Column("images_generated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("training_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('validating', 'training', 'ready', 'failed')", name=op.f("ck_versions_status_known")
        ),
        sa.CheckConstraint(
            "images_count IS NULL OR images_count BETWEEN 5 AND 30",
            name=op.f("ck_versions_images_count_range"),
        ),
        sa.CheckConstraint("images_generated >= 0", name=op.f("ck_versions_generated_not_negative")),
        sa.CheckConstraint("images_quota >= 0", name=op.f("ck_versions_quota_not_negative")),
        sa.CheckConstraint(
            "progress IS NULL OR (progress >= 0 AND progress <= 1)", name=op.f("ck_versions_progress_range")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_versions_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_versions_payment_id")),
        sa.UniqueConstraint("training_id", name=op.f("uq_versions_training_id")),
    )
    # payments and versions reference each other; the payments side is added once both tables exist.
    op.create_foreign_key(
        op.f("fk_payments_version_id_versions"), "payments", "versions", ["version_id"], ["id"]
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("amount_images", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("guidance_scale", sa.Double(), nullable=True),
        sa.Column("num_inference_steps", sa.Integer(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("prediction_id", sa.String(length=255), nullable=True),
        sa.Column("predict_time", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_prompts_status_known")
        ),
        sa.CheckConstraint("amount_images IN (1, 4)", name=op.f("ck_prompts_amount_images_allowed")),
        sa.CheckConstraint(
            "char_length(prompt_text) BETWEEN 1 AND 1000", name=op.f("ck_prompts_prompt_length")
        ),
        sa.CheckConstraint("width > 0 AND height > 0", name=op.f("ck_prompts_size_positive")),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"], name=op.f("fk_prompts_version_id_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
        sa.UniqueConstraint("prediction_id", name=op.f("uq_prompts_prediction_id")),
    )
    op.create_index(
        "ix_prompts_version_id_created_at", "prompts", ["version_id", "created_at", "id"], unique=False
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("prompt_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("s3_key", sa.String(length=1024), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("position >= 0", name=op.f("ck_images_position_not_negative")),
        sa.CheckConstraint("width > 0 AND height > 0", name=op.f("ck_images_size_positive")),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name=op.f("fk_images_prompt_id_prompts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("prompt_id", "position", name="uq_images_prompt_id_position"),
        sa.UniqueConstraint("s3_key", name=op.f("uq_images_s3_key")),
    )
    op.create_index(op.f("ix_images_prompt_id"), "images", ["prompt_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_images_prompt_id"), table_name="images")
    op.drop_table("images")
    op.drop_index("ix_prompts_version_id_created_at", table_name="prompts")
    op.drop_table("prompts")
    op.drop_constraint(op.f("fk_payments_version_id_versions"), "payments", type_="foreignkey")
    op.drop_table("versions")
    op.drop_index(op.f("ix_payments_version_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_plan_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_payment_intent_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_table("plans")
