"""Buyer PII sealed and hashed on orders; customer channels as rows instead of a JSON list

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:30:52.967031
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('customer_channels',
    sa.Column('customer_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('first_order_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('customer_id', 'channel', name=op.f('pk_customer_channels'))
    )
    # Carry the customers' channel lists over before the column goes.
    conn = op.get_bind()
    customers = sa.table('customers', sa.column('id'), sa.column('channels', orderhub.adapters.db.types.Json))
    channels = sa.table('customer_channels', sa.column('customer_id'), sa.column('channel'))
    rows = [{'customer_id': cid, 'channel': ch} for cid, chs in conn.execute(sa.select(customers.c.id, customers.c.channels))
            for ch in dict.fromkeys(chs or [])]
    if rows:
        conn.execute(channels.insert(), rows)
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('channels')

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pii_sealed', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('phone_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('phone_last4_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('pii_state', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_orders_phone_hash', ['phone_hash'], unique=False)
        batch_op.create_index('ix_orders_phone_last4_hash', ['phone_last4_hash'], unique=False)
        batch_op.create_index('ix_orders_pii_state', ['pii_state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_pii_state')
        batch_op.drop_index('ix_orders_phone_last4_hash')
        batch_op.drop_index('ix_orders_phone_hash')
        batch_op.drop_column('pii_state')
        batch_op.drop_column('phone_last4_hash')
        batch_op.drop_column('phone_hash')
        batch_op.drop_column('pii_sealed')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channels', orderhub.adapters.db.types.Json, nullable=False, server_default='[]'))

    op.drop_table('customer_channels')
