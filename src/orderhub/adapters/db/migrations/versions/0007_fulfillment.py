"""Fulfillments and freeze instructions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 19:13:58.952009
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('freeze_instructions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('requested_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('answered_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_freeze_instructions'))
    )
    with op.batch_alter_table('freeze_instructions', schema=None) as batch_op:
        batch_op.create_index('ix_freeze_instructions_order_id', ['order_id'], unique=False)
        batch_op.create_index('ix_freeze_instructions_outcome', ['outcome'], unique=False)

    op.create_table('fulfillments',
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('package_no', sa.Integer(), nullable=False),
    sa.Column('warehouse', sa.String(length=32), nullable=False),
    sa.Column('wms', sa.String(length=32), nullable=False),
    sa.Column('wms_order_no', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('carrier', sa.String(length=32), nullable=True),
    sa.Column('waybill_no', sa.String(length=64), nullable=True),
    sa.Column('priority', sa.Integer(), server_default='0', nullable=False),
    sa.Column('queued_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('accepted_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('packed_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('shipped_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('order_id', 'package_no', name=op.f('pk_fulfillments'))
    )
    with op.batch_alter_table('fulfillments', schema=None) as batch_op:
        batch_op.create_index('ix_fulfillments_status', ['status'], unique=False)
        batch_op.create_index('ix_fulfillments_waybill_no', ['waybill_no'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('fulfillments', schema=None) as batch_op:
        batch_op.drop_index('ix_fulfillments_waybill_no')
        batch_op.drop_index('ix_fulfillments_status')

    op.drop_table('fulfillments')
    with op.batch_alter_table('freeze_instructions', schema=None) as batch_op:
        batch_op.drop_index('ix_freeze_instructions_outcome')
        batch_op.drop_index('ix_freeze_instructions_order_id')

    op.drop_table('freeze_instructions')
