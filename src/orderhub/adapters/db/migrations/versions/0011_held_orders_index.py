"""The exception queue's partial index: orders with a hold, newest first

PostgreSQL also gets statistics on the holds' text: without them the planner guesses that nearly
every order has a hold (an inequality's default selectivity) and scans the table instead.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 11:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

HELD_SQL = "CAST(holds AS TEXT) != '[]'"  # tables.HELD_SQL as of this revision


def upgrade() -> None:
    op.create_index('ix_orders_held', 'orders', ['created_at', 'id'], unique=False,
                    postgresql_where=sa.text(HELD_SQL), sqlite_where=sa.text(HELD_SQL))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE STATISTICS IF NOT EXISTS st_orders_holds_text ON (CAST(holds AS TEXT)) FROM orders")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP STATISTICS IF EXISTS st_orders_holds_text")
    op.drop_index('ix_orders_held', table_name='orders')
