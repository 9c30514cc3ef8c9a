"""The services one process needs, built once from the settings and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from radsight.config import Settings
from radsight.store.db import Database, migrate
from radsight.store.files import DirectoryStore


@dataclass
class Runtime:
    settings: Settings
    db: Database
    files: DirectoryStore

    @classmethod
    def open(cls, settings: Settings, *, run_migrations: bool = True) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        if run_migrations:
            migrate(url)
        return cls(
            settings=settings,
            db=Database(url),
            files=DirectoryStore(settings.data_dir / "objects", fsync=not settings.unsafe_no_fsync),
        )

    def close(self) -> None:
        self.db.dispose()
