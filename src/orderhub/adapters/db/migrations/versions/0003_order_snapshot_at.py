"""orders.snapshot_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:10:31.112379
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snapshot_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('snapshot_at')

