"""admission: algorithm lifecycle states and switches; result mode, revision, supersession

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

- ``algorithm_states``: every recorded lifecycle state of an algorithm version at a scope
  (append-only history; the newest per scope is in force).
- ``algorithm_switches``: an organisation switching an algorithm on or off.
- ``results.mode`` (clinical | shadow), ``results.revision`` (re-analyses of the same
  version), ``results.superseded_by_id`` (a newer clinical result of the same algorithm).
  Results stored before this revision were all delivered: they become ``clinical``,
  revision 0, not superseded.
- ``evaluations.organisation_id``: the organisation whose thresholds a calibration test ran
  at (NULL for the rows before: they ran at platform-wide points unless told otherwise).

Installed algorithm versions get no state here: ``radsight serve`` (and ``radsight
algorithm list``) register what is installed, with the evidence each ships.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "algorithm_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("algorithm_name", sa.String(length=64), nullable=False),
        sa.Column("algorithm_version", sa.String(length=32), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("region_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence_id", sa.Integer(), nullable=True),
        sa.Column("override", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["evidence_id"], ["evaluations.id"]),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
        sa.ForeignKeyConstraint(["region_id"], ["regions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_algorithm_states_version",
        "algorithm_states",
        ["algorithm_name", "algorithm_version"],
        unique=False,
    )
    op.create_table(
        "algorithm_switches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("algorithm_name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_algorithm_switches_org",
        "algorithm_switches",
        ["organisation_id", "algorithm_name"],
        unique=False,
    )
    with op.batch_alter_table("results") as batch:
        batch.add_column(
            sa.Column("mode", sa.String(length=16), nullable=False, server_default="clinical")
        )
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("superseded_by_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("results") as batch:
        batch.alter_column("mode", server_default=None)
        batch.alter_column("revision", server_default=None)
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("organisation_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_evaluations_organisation_id", "organisations", ["organisation_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_constraint("fk_evaluations_organisation_id", type_="foreignkey")
        batch.drop_column("organisation_id")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("superseded_by_id")
        batch.drop_column("revision")
        batch.drop_column("mode")
    op.drop_index("ix_algorithm_switches_org", table_name="algorithm_switches")
    op.drop_table("algorithm_switches")
    op.drop_index("ix_algorithm_states_version", table_name="algorithm_states")
    op.drop_table("algorithm_states")
