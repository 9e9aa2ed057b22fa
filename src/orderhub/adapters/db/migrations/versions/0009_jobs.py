"""jobs: long operations (back-tests, file imports) with their progress, report or error

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import orderhub.adapters.db.types
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('done', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('error', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', orderhub.adapters.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )


def downgrade() -> None:
    op.drop_table('jobs')
