"""tus PATCH claims (one writer per upload across API processes); indexes for shared-input checks

Revision ID: 0002_sec_api
Revises: 0002_sources
Create Date: 2026-11-29 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_sec_api'
down_revision = '0002_sources'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patch_token', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('patch_until', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_upload_sessions_storage_key', ['storage_key'], unique=False)
    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_workflow_jobs_input_key', ['input_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_workflow_jobs_input_key')
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_upload_sessions_storage_key')
        batch_op.drop_column('patch_until')
        batch_op.drop_column('patch_token')
