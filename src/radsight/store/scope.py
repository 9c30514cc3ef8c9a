"""Which organisations a read may return rows of: tenancy in one type.

Every store function that reads or lists tenant rows takes ``*, scope: Scope`` (required,
keyword-only), so no call can forget it and no default fails open:

- ``Scope.of(organisation_id)``: one organisation (a radiologist, an organisation admin);
- ``Scope.orgs(ids)``: several (a supervisor's region); an empty set sees nothing;
- ``Scope.ALL``: every organisation, said out loud by the code that means it (the
  scheduler, the workers, the operator's CLI) and, behind the API, only by a platform-wide
  role (:func:`radsight.auth.scope_of` is the one rule from a principal to a scope).

Rows without an organisation (default thresholds, a version's calibration alert, a
rejection from an unknown caller) are the platform's: :meth:`Scope.includes` is true for
them only in ``Scope.ALL``; the functions that share such rows with every tenant say so
where they query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, false, true


@dataclass(frozen=True)
class Scope:
    """The organisations a caller may see; ``organisation_ids`` is None only in ``ALL``."""

    organisation_ids: frozenset[int] | None

    ALL: ClassVar[Scope]

    @classmethod
    def of(cls, organisation_id: int) -> Scope:
        """One organisation."""
        return cls(frozenset((int(organisation_id),)))

    @classmethod
    def orgs(cls, organisation_ids: Iterable[int]) -> Scope:
        """These organisations (none: a scope that sees nothing)."""
        return cls(frozenset(int(i) for i in organisation_ids))

    @property
    def is_all(self) -> bool:
        return self.organisation_ids is None

    def includes(self, organisation_id: int | None) -> bool:
        """Whether a row of this organisation is visible (a row of none: only in ALL)."""
        if self.organisation_ids is None:
            return True
        return organisation_id is not None and organisation_id in self.organisation_ids

    def where(self, column: Any) -> ColumnElement[bool]:
        """A WHERE clause restricting ``column`` (an ``organisation_id``) to this scope."""
        ids = self.organisation_ids
        if ids is None:
            return true()
        if not ids:
            return false()
        if len(ids) == 1:
            return column == next(iter(ids))  # type: ignore[no-any-return]
        return column.in_(sorted(ids))  # type: ignore[no-any-return]

    def narrow(self, organisation_id: int) -> Scope | None:
        """One organisation of this scope, or None when it is not in it."""
        return Scope.of(organisation_id) if self.includes(organisation_id) else None

    def __repr__(self) -> str:
        if self.organisation_ids is None:
            return "Scope.ALL"
        return f"Scope.orgs({sorted(self.organisation_ids)})"


Scope.ALL = Scope(None)
