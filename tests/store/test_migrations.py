"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic import command

from radsight.store.db import alembic_config, migrate


def test_migrations_match_the_models(database_url):
    migrate(database_url)
    migrate(database_url)  # idempotent
    command.check(alembic_config(database_url))  # raises if the models drifted


def test_migrations_downgrade_and_upgrade_again(database_url):
    migrate(database_url)
    command.downgrade(alembic_config(database_url), "base")
    migrate(database_url)
    command.check(alembic_config(database_url))
