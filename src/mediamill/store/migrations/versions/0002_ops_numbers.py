"""workflow_jobs.finished_at: when a job reached any terminal state

``completed_at`` is set only for jobs that completed (fully or partly); failed and cancelled
jobs keep it NULL, so every figure windowed on it missed them. ``finished_at`` is set on every
terminal state and is what windows of finished jobs read. Existing finished jobs are backfilled
from ``completed_at``, else their last update. Both window indexes (``finished_at``, ``submitted_at``)
carry the columns a window's figures filter on, so the overview reads them from the index alone.

Revision ID: 0002_ops_numbers
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_ops_numbers'
down_revision = '0001'
branch_labels = None
depends_on = None

TERMINAL = "('completed', 'partial', 'failed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finished_at', sa.DateTime(), nullable=True))
        # the other columns ride along so a window's counts and run times are read from the index alone
        batch_op.create_index('ix_workflow_jobs_finished_at',
                              ['finished_at', 'tenant_id', 'status', 'shadow_of', 'started_at'], unique=False)
        batch_op.drop_index('ix_workflow_jobs_submitted_at')
        batch_op.create_index('ix_workflow_jobs_submitted_at', ['submitted_at', 'tenant_id', 'shadow_of'],
                              unique=False)
    op.execute("UPDATE workflow_jobs SET finished_at = COALESCE(completed_at, updated_at, started_at, submitted_at) "
               f"WHERE status IN {TERMINAL}")


def downgrade() -> None:
    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_workflow_jobs_submitted_at')
        batch_op.create_index('ix_workflow_jobs_submitted_at', ['submitted_at'], unique=False)
        batch_op.drop_index('ix_workflow_jobs_finished_at')
        batch_op.drop_column('finished_at')
