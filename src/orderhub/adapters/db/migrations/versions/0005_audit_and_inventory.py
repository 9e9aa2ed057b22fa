"""Audit: stock, reservations, ledger, SKU mappings, versioned rule sets

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 18:16:04.193182
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('sets', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('disabled', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_audit_versions'))
    )
    op.create_table('reservations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('warehouse', sa.String(length=32), nullable=False),
    sa.Column('qty', sa.BigInteger(), nullable=False),
    sa.Column('package_no', sa.Integer(), server_default='1', nullable=False),
    sa.Column('gift', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('qty > 0', name=op.f('ck_reservations_qty_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations'))
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index('ix_reservations_order_id', ['order_id'], unique=False)
        batch_op.create_index('ix_reservations_sku_warehouse_status', ['sku', 'warehouse', 'status'], unique=False)

    op.create_table('rule_sets',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('content', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('published_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', 'version', name=op.f('pk_rule_sets'))
    )
    op.create_table('sku_mappings',
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('platform_sku_id', sa.String(length=64), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('platform_item_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('channel', 'platform_sku_id', name=op.f('pk_sku_mappings'))
    )
    with op.batch_alter_table('sku_mappings', schema=None) as batch_op:
        batch_op.create_index('ix_sku_mappings_sku', ['sku'], unique=False)

    op.create_table('stock_pushes',
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('pushed_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('channel', 'shop_id', 'sku', name=op.f('pk_stock_pushes'))
    )
    op.create_table('stock',
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('warehouse', sa.String(length=32), nullable=False),
    sa.Column('on_hand', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('reserved', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('safety', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('updated_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('on_hand >= 0 AND reserved >= 0 AND safety >= 0 AND reserved <= on_hand', name=op.f('ck_stock_never_oversold')),
    sa.PrimaryKeyConstraint('sku', 'warehouse', name=op.f('pk_stock'))
    )
    op.create_table('stock_ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('warehouse', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('on_hand_delta', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('reserved_delta', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stock_ledger'))
    )
    with op.batch_alter_table('stock_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_stock_ledger_sku_id', ['sku', 'id'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audit_state', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('audited_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('carrier', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('gifts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('decisions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('released_holds', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('merge_group', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_orders_audit_state', ['audit_state'], unique=False)
        batch_op.create_index('ix_orders_merge_group', ['merge_group'], unique=False)

    with op.batch_alter_table('skus', schema=None) as batch_op:
        batch_op.add_column(sa.Column('presale', sa.Boolean(), server_default=sa.false(), nullable=False))

    # Orders already paid when this version is installed are audited like new ones.
    op.execute("UPDATE orders SET audit_state = 'pending' WHERE status = 'paid'")



def downgrade() -> None:
    with op.batch_alter_table('skus', schema=None) as batch_op:
        batch_op.drop_column('presale')

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_merge_group')
        batch_op.drop_index('ix_orders_audit_state')
        batch_op.drop_column('merge_group')
        batch_op.drop_column('released_holds')
        batch_op.drop_column('decisions')
        batch_op.drop_column('gifts')
        batch_op.drop_column('carrier')
        batch_op.drop_column('audited_at')
        batch_op.drop_column('audit_state')

    with op.batch_alter_table('stock_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_stock_ledger_sku_id')

    op.drop_table('stock_ledger')
    op.drop_table('stock')
    op.drop_table('stock_pushes')
    op.drop_table('sku_mappings')
    op.drop_table('rule_sets')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index('ix_reservations_sku_warehouse_status')
        batch_op.drop_index('ix_reservations_order_id')

    op.drop_table('reservations')
    op.drop_table('audit_versions')
