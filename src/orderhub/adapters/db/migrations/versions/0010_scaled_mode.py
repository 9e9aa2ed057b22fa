"""Scaled mode: inbox rows keyed by broker message, worker leases and heartbeats, degradation switches

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:30:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbox') as batch:
        batch.add_column(sa.Column('broker_key', sa.String(length=64), nullable=True))
        batch.create_unique_constraint(op.f('uq_inbox_broker_key'), ['broker_key'])
    op.create_table('worker_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('lease_until', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_leases'))
    )
    op.create_table('workers',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('host', sa.String(length=128), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('seen_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('stats', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    op.create_table('switches',
    sa.Column('name', sa.String(length=48), nullable=False),
    sa.Column('on', sa.Boolean(), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('set_by', sa.String(length=64), nullable=False),
    sa.Column('set_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_switches'))
    )


def downgrade() -> None:
    op.drop_table('switches')
    op.drop_table('workers')
    op.drop_table('worker_leases')
    with op.batch_alter_table('inbox') as batch:
        batch.drop_constraint(op.f('uq_inbox_broker_key'), type_='unique')
        batch.drop_column('broker_key')
