"""Outbox, notification templates, parcels, tracking events, tickets

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:05:09.447119
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notification_templates',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', 'channel', name=op.f('pk_notification_templates'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=True),
    sa.Column('recipient', sa.String(length=128), nullable=True),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('priority', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('response', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_idempotency_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_order_id', ['order_id'], unique=False)
        batch_op.create_index('ix_outbox_recipient_created_at', ['recipient', 'created_at'], unique=False)
        batch_op.create_index('ix_outbox_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)

    op.create_table('parcels',
    sa.Column('waybill_no', sa.String(length=64), nullable=False),
    sa.Column('carrier', sa.String(length=32), nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=True),
    sa.Column('package_no', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('shipped_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('first_scan_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_event_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('stall', sa.String(length=32), nullable=True),
    sa.Column('subscribed_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('polled_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('waybill_no', name=op.f('pk_parcels'))
    )
    with op.batch_alter_table('parcels', schema=None) as batch_op:
        batch_op.create_index('ix_parcels_order_id', ['order_id'], unique=False)
        batch_op.create_index('ix_parcels_state', ['state'], unique=False)

    op.create_table('tickets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets'))
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_order_id', ['order_id'], unique=False)
        batch_op.create_index('ix_tickets_status_kind', ['status', 'kind'], unique=False)

    op.create_table('tracking_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('waybill_no', sa.String(length=64), nullable=False),
    sa.Column('carrier', sa.String(length=32), nullable=False),
    sa.Column('at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('carrier_code', sa.String(length=32), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('location', sa.String(length=128), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('received_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tracking_events')),
    sa.UniqueConstraint('waybill_no', 'at', 'carrier_code', 'description', name=op.f('uq_tracking_events_waybill_no_at_carrier_code_description'))
    )
    with op.batch_alter_table('tracking_events', schema=None) as batch_op:
        batch_op.create_index('ix_tracking_events_waybill_no_at', ['waybill_no', 'at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tracking_events', schema=None) as batch_op:
        batch_op.drop_index('ix_tracking_events_waybill_no_at')

    op.drop_table('tracking_events')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_status_kind')
        batch_op.drop_index('ix_tickets_order_id')

    op.drop_table('tickets')
    with op.batch_alter_table('parcels', schema=None) as batch_op:
        batch_op.drop_index('ix_parcels_state')
        batch_op.drop_index('ix_parcels_order_id')

    op.drop_table('parcels')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_status_next_attempt_at')
        batch_op.drop_index('ix_outbox_recipient_created_at')
        batch_op.drop_index('ix_outbox_order_id')

    op.drop_table('outbox')
    op.drop_table('notification_templates')
