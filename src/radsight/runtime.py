"""The services one process needs, built once from the settings and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from radsight.config import Settings
from radsight.store.db import Database, migrate
from radsight.store.files import ObjectStore, open_object_store


@dataclass
class Runtime:
    settings: Settings
    db: Database
    #: instance files and results: a directory or S3 (``object_store`` setting)
    files: ObjectStore

    @classmethod
    def open(cls, settings: Settings, *, run_migrations: bool = True) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        if run_migrations:
            migrate(url)
        files = open_object_store(settings)
        files.check()  # fail fast: a missing bucket or unmounted share is a set-up error
        return cls(settings=settings, db=Database(url), files=files)

    def close(self) -> None:
        self.db.dispose()
