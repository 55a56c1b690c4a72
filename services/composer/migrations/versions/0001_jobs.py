"""jobs table

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("webhook_url", sa.Text, nullable=True),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("stage", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
        sa.Column("not_before", sa.Float, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("result_path", sa.Text, nullable=True),
        sa.Column("result_size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("provenance_json", sa.Text, nullable=True),
        sa.Column("webhook_state", sa.String(16), nullable=False, server_default="none"),
        sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("webhook_next_at", sa.Float, nullable=False, server_default="0"),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    )
    op.create_index("ix_jobs_state_created", "jobs", ["state", "created_at"])
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_created", "jobs")
    op.drop_index("ix_jobs_state_created", "jobs")
    op.drop_table("jobs")
