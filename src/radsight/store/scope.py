"""Which organisations a query may return rows of (tenancy in one place for lists)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import false

#: one organisation, several (a supervisor's region), or ``None`` for every organisation
OrgScope = int | Sequence[int] | None


def org_filter(column: Any, scope: OrgScope) -> Any:
    """A WHERE clause restricting ``column`` (an ``organisation_id``) to ``scope``; or None."""
    if scope is None:
        return None
    if isinstance(scope, int):
        return column == scope
    ids = list(scope)
    if not ids:
        return false()
    return column == ids[0] if len(ids) == 1 else column.in_(ids)


def in_scope(organisation_id: int | None, scope: OrgScope) -> bool:
    if scope is None:
        return True
    if isinstance(scope, int):
        return organisation_id == scope
    return organisation_id in scope
