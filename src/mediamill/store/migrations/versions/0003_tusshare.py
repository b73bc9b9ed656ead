"""tus uploads any API replica can continue: where an unfinished upload's bytes are (part_state)

Revision ID: 0003_tusshare
Revises: 0002_sec_api
Create Date: 2026-11-30 02:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003_tusshare'
down_revision = '0002_sec_api'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('part_state', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.drop_column('part_state')
