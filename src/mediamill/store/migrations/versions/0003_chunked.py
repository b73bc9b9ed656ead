"""step_segments: sub-tasks of chunked (parallel) transcodes, claimed and leased by any worker

Revision ID: 0003_chunked
Revises: 0003_tusshare
Create Date: 2026-11-30 02:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003_chunked'
down_revision = '0003_tusshare'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('step_segments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=True),
    sa.Column('step_name', sa.String(length=100), nullable=False),
    sa.Column('run_number', sa.Integer(), server_default=sa.text('1'), nullable=True),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=True),
    sa.Column('task', sa.JSON(), nullable=True),
    sa.Column('queue_name', sa.String(length=50), nullable=True),
    sa.Column('priority', sa.Integer(), server_default=sa.text('5'), nullable=True),
    sa.Column('status', sa.String(length=20), server_default=sa.text("'queued'"), nullable=False),
    sa.Column('scheduled_time', sa.DateTime(), nullable=True),
    sa.Column('worker_id', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=True),
    sa.Column('max_attempts', sa.Integer(), server_default=sa.text('1'), nullable=True),
    sa.Column('output_keys', sa.JSON(), nullable=True),
    sa.Column('error_class', sa.String(length=30), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['workflow_jobs.id'], name=op.f('fk_step_segments_job_id_workflow_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_step_segments'))
    )
    with op.batch_alter_table('step_segments', schema=None) as batch_op:
        batch_op.create_index('ix_step_segments_job', ['job_id', 'step_name', 'run_number'], unique=False)
        batch_op.create_index('ix_step_segments_claim', ['queue_name', 'priority', 'scheduled_time'], unique=False,
                              sqlite_where=sa.text("status = 'queued'"), postgresql_where=sa.text("status = 'queued'"))
        batch_op.create_index('ix_step_segments_lease', ['lease_expires_at'], unique=False,
                              sqlite_where=sa.text("status = 'processing'"),
                              postgresql_where=sa.text("status = 'processing'"))


def downgrade() -> None:
    with op.batch_alter_table('step_segments', schema=None) as batch_op:
        batch_op.drop_index('ix_step_segments_lease')
        batch_op.drop_index('ix_step_segments_claim')
        batch_op.drop_index('ix_step_segments_job')
    op.drop_table('step_segments')
