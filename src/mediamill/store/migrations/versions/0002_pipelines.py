"""pipelines: managed routing rules, the routing decision on jobs, re-runs of chosen steps,
staged rollouts and shadow runs

Revision ID: 0002_pipelines
Revises: 0002_sec_auth
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_pipelines'
down_revision = '0002_sec_auth'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('routing_rules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('created_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_routing_rules_tenant_position', ['tenant_id', 'position'], unique=False)
    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('routing', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('rerun', sa.JSON(), nullable=True))
        batch_op.create_index('ix_workflow_jobs_shadow_of', ['shadow_of'], unique=False)
    op.create_table('workflow_rollouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), server_default=sa.text("'default'"), nullable=False),
    sa.Column('workflow_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('base_version', sa.Integer(), nullable=True),
    sa.Column('percent', sa.Float(), nullable=False),
    sa.Column('guard', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=20), server_default=sa.text("'active'"), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('end_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['workflow_id'], ['workflow_definitions.id'],
                            name=op.f('fk_workflow_rollouts_workflow_id_workflow_definitions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_rollouts'))
    )
    with op.batch_alter_table('workflow_rollouts', schema=None) as batch_op:
        batch_op.create_index('ix_workflow_rollouts_live', ['workflow_id', 'kind', 'state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('workflow_rollouts', schema=None) as batch_op:
        batch_op.drop_index('ix_workflow_rollouts_live')
    op.drop_table('workflow_rollouts')
    with op.batch_alter_table('workflow_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_workflow_jobs_shadow_of')
        batch_op.drop_column('rerun')
        batch_op.drop_column('routing')
    with op.batch_alter_table('routing_rules', schema=None) as batch_op:
        batch_op.drop_index('ix_routing_rules_tenant_position')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('created_by')
        batch_op.drop_column('version')
        batch_op.drop_column('name')
