"""security: aggregated rejections, AE source checks, sign-in throttling, OIDC, audit chain

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

- ``rejections.remote_addr``, ``count``, ``last_at``: refused associations from unregistered
  callers are aggregated, one row per (AE title, address) per interval.
- ``application_entities.allowed_hosts`` (addresses or CIDR networks) and
  ``tls_client_subject`` (DICOM TLS client certificate subject).
- ``users.failed_sign_ins``, ``locked_until``, ``locked``: sign-in lockout;
  ``auth_provider`` and ``external_subject`` (unique): OpenID Connect users;
  ``users.organisation_id`` becomes nullable (a platform-wide admin signed in through
  OpenID Connect has no organisation).
- ``sign_in_failures``: failed sign-ins within the throttle window (per address).
- ``audit_events.prev_hash`` and ``hash``: the tamper-evident chain. Rows written before
  this revision keep empty hashes. ``audit_chain_start`` (one row) fixes where the chain
  starts: ``unchained_through_id`` is the newest event id at this migration (0 on an
  empty trail). ``radsight audit verify`` accepts unhashed events up to it and no later,
  and the first chained event must link to the start (a changed start breaks that link).
- ``destinations.tls`` and ``tls_server_name``: deliveries over DICOM TLS, the PACS's
  certificate checked against that name (empty: the host).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rejections") as t:
        t.add_column(sa.Column("remote_addr", sa.String(64), nullable=False, server_default=""))
        t.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
        t.add_column(sa.Column("last_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("application_entities") as t:
        t.add_column(sa.Column("allowed_hosts", sa.JSON(), nullable=False, server_default="[]"))
        t.add_column(
            sa.Column("tls_client_subject", sa.String(255), nullable=False, server_default="")
        )
    with op.batch_alter_table("users") as t:
        t.add_column(sa.Column("failed_sign_ins", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("locked_until", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("locked", sa.Boolean(), nullable=False, server_default=sa.false()))
        t.add_column(
            sa.Column("auth_provider", sa.String(16), nullable=False, server_default="local")
        )
        t.add_column(sa.Column("external_subject", sa.String(255), nullable=True))
        t.create_unique_constraint("uq_users_external_subject", ["external_subject"])
        # a platform-wide admin signed in through single sign-on has no organisation
        t.alter_column("organisation_id", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("audit_events") as t:
        t.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        t.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("destinations") as t:
        t.add_column(sa.Column("tls", sa.Boolean(), nullable=False, server_default=sa.false()))
        t.add_column(sa.Column("tls_server_name", sa.String(255), nullable=False, server_default=""))
    op.create_table(
        "audit_chain_start",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unchained_through_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "INSERT INTO audit_chain_start (id, unchained_through_id) "
        "SELECT 1, COALESCE(MAX(id), 0) FROM audit_events"
    )
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sign_in_failures_addr", "sign_in_failures", ["remote_addr", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_failures_addr", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    with op.batch_alter_table("destinations") as t:
        t.drop_column("tls_server_name")
        t.drop_column("tls")
    op.drop_table("audit_chain_start")
    with op.batch_alter_table("audit_events") as t:
        t.drop_column("hash")
        t.drop_column("prev_hash")
    # fails while a user without an organisation (an OIDC admin) exists: remove them first
    with op.batch_alter_table("users") as t:
        t.alter_column("organisation_id", existing_type=sa.Integer(), nullable=False)
        t.drop_constraint("uq_users_external_subject", type_="unique")
        for c in ("external_subject", "auth_provider", "locked", "locked_until", "failed_sign_ins"):
            t.drop_column(c)
    with op.batch_alter_table("application_entities") as t:
        t.drop_column("tls_client_subject")
        t.drop_column("allowed_hosts")
    with op.batch_alter_table("rejections") as t:
        t.drop_column("last_at")
        t.drop_column("count")
        t.drop_column("remote_addr")
