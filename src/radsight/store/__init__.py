"""The store: SQL metadata (SQLAlchemy) and instance files; the only package that talks SQL.

Every function takes a :data:`Session` first; those that read tenant rows also take a
required ``scope`` (:class:`Scope`).
"""

from sqlalchemy.orm import Session

from radsight.store.scope import Scope

__all__ = ["Scope", "Session"]
