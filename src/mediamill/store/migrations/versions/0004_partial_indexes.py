"""Partial indexes on workflow_jobs columns that are NULL on most rows or until a job ends (completed_at,
finished_at, idempotency_key, shadow_of): a row without a value costs no index entry when it is inserted or
when its status changes.

Revision ID: 0004_partial_indexes
Revises: 0003_chunked
Create Date: 2026-11-30 13:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_partial_indexes'
down_revision = '0003_chunked'
branch_labels = None
depends_on = None

_PARTIAL = (
    ('ix_workflow_jobs_completed_at', ['completed_at'], False, 'completed_at IS NOT NULL'),
    ('ix_workflow_jobs_finished_at', ['finished_at', 'tenant_id', 'status', 'shadow_of', 'started_at'], False,
     'finished_at IS NOT NULL'),
    ('uq_workflow_jobs_idempotency', ['tenant_id', 'idempotency_key'], True, 'idempotency_key IS NOT NULL'),
    ('ix_workflow_jobs_shadow_of', ['shadow_of'], False, 'shadow_of IS NOT NULL'),
)


def upgrade() -> None:
    for name, columns, unique, where in _PARTIAL:
        op.drop_index(name, table_name='workflow_jobs')
        op.create_index(name, 'workflow_jobs', columns, unique=unique,
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, columns, unique, _where in _PARTIAL:
        op.drop_index(name, table_name='workflow_jobs')
        op.create_index(name, 'workflow_jobs', columns, unique=unique)
