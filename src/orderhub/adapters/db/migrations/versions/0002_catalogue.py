"""catalogue: warehouses and skus

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:31:51.223037
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('skus',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=True),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('cost', sa.BigInteger(), nullable=False),
    sa.Column('weight_g', sa.Integer(), nullable=False),
    sa.CheckConstraint('price >= 0 AND cost >= 0', name=op.f('ck_skus_money_not_negative')),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_skus'))
    )
    op.create_table('warehouses',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('city', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_warehouses'))
    )


def downgrade() -> None:
    op.drop_table('warehouses')
    op.drop_table('skus')
