"""sources (watch folders, buckets) and delivered outputs

Revision ID: 0002_sources
Revises: 0002_pipelines
Create Date: 2026-11-29 22:22:50.663920
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_sources'
down_revision = '0002_pipelines'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), server_default=sa.text("'default'"), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('location', sa.Text(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('(TRUE)'), nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=True),
    sa.Column('high_water', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('last_scan_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('waiting_reason', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sources')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_sources_tenant_name')
    )
    op.create_table('source_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), server_default=sa.text("'default'"), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=200), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('etag', sa.String(length=200), nullable=True),
    sa.Column('mtime', sa.Float(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('origin', sa.String(length=10), nullable=True),
    sa.Column('claimed_by', sa.String(length=100), nullable=True),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('after_done', sa.String(length=20), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=True),
    sa.Column('taken_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_source_files_source_id_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_files')),
    sa.UniqueConstraint('source_id', 'path', 'fingerprint', name='uq_source_files_identity')
    )
    with op.batch_alter_table('source_files', schema=None) as batch_op:
        batch_op.create_index('ix_source_files_source_status', ['source_id', 'status', 'id'], unique=False)

    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivered_url', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deliver', sa.JSON(), nullable=True))

    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deliver_prefixes', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('deliver_prefixes')

    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.drop_column('deliver')

    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('delivered_url')

    with op.batch_alter_table('source_files', schema=None) as batch_op:
        batch_op.drop_index('ix_source_files_source_status')

    op.drop_table('source_files')
    op.drop_table('sources')
