"""Physicians' verdicts: append-only rows; a change is a new row that supersedes the old.

The row in force for a (study, result, kind, finding) is the newest one nobody superseded.
Giving a verdict also moves the study's ``review_state`` (what the worklist shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from radsight.errors import InvalidInput
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow, StudyRow, UserRow, VerdictRow

#: kind -> the values it takes ("" for the free-text kinds, whose ``text`` is the content)
VERDICT_VALUES: dict[str, tuple[str, ...]] = {
    "finding": ("agree", "disagree", "unsure"),
    "study": ("normal", "abnormal"),
    "conclusion": ("",),
    "repeat": ("",),
}


@dataclass(frozen=True)
class VerdictEntry:
    """A verdict with the names a history view needs."""

    row: VerdictRow
    username: str
    display_name: str
    superseded_by: int | None


def current_verdict(
    s: Session, study_id: int, kind: str, finding_key: str = "", result_id: int | None = None
) -> VerdictRow | None:
    """The row in force for this key: the newest that no other row supersedes."""
    newer = select(VerdictRow.supersedes_id).where(
        VerdictRow.study_id == study_id, VerdictRow.supersedes_id.is_not(None)
    )
    q = (
        select(VerdictRow)
        .where(
            VerdictRow.study_id == study_id,
            VerdictRow.kind == kind,
            VerdictRow.finding_key == finding_key,
            VerdictRow.id.not_in(newer),
        )
        .order_by(VerdictRow.id.desc())
    )
    if result_id is None:
        q = q.where(VerdictRow.result_id.is_(None))
    else:
        # a verdict on an earlier revision of the result judged other findings: only one
        # given since this revision was made is in force
        made = select(ResultRow.created_at).where(ResultRow.id == result_id).scalar_subquery()
        q = q.where(VerdictRow.result_id == result_id, VerdictRow.created_at >= made)
    return s.scalars(q).first()


def create_verdict(
    s: Session,
    *,
    study: StudyRow,
    user_id: int,
    kind: str,
    value: str = "",
    text: str = "",
    finding_key: str = "",
    result_id: int | None = None,
    algorithm_name: str = "",
    algorithm_version: str = "",
    at: datetime | None = None,
) -> VerdictRow:
    """Append a verdict; the one in force for the same key, if any, is superseded.

    Raises ``InvalidInput`` for a kind or value outside :data:`VERDICT_VALUES`.
    """
    if kind not in VERDICT_VALUES:
        raise InvalidInput(f"verdict kind must be one of {', '.join(VERDICT_VALUES)}, not {kind!r}")
    if value not in VERDICT_VALUES[kind]:
        allowed = ", ".join(v for v in VERDICT_VALUES[kind] if v) or "nothing (use text)"
        raise InvalidInput(f"a {kind} verdict takes {allowed}, not {value!r}")
    if (kind == "finding") != bool(finding_key):
        raise InvalidInput("a finding verdict names its finding; other kinds do not")
    previous = current_verdict(s, study.id, kind, finding_key, result_id)
    now = at or utcnow()
    row = VerdictRow(
        organisation_id=study.organisation_id,
        study_id=study.id,
        result_id=result_id,
        user_id=user_id,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        kind=kind,
        finding_key=finding_key,
        value=value,
        text=text,
        supersedes_id=previous.id if previous is not None else None,
        created_at=now,
    )
    s.add(row)
    # a requested repeat scan stays the study's state until the study is reviewed anew
    if kind == "repeat":
        state = "repeat_requested"
    elif study.review_state == "repeat_requested" and kind != "study":
        state = "repeat_requested"
    else:
        state = "reviewed"
    study.review_state = state
    study.reviewed_at = now
    s.flush()
    return row


def list_verdicts(
    s: Session,
    *,
    scope: Scope,
    algorithm_name: str | None = None,
    since: datetime | None = None,
    study_id: int | None = None,
    current_only: bool = False,
    limit: int | None = None,
) -> list[VerdictRow]:
    """Verdicts of the scope's organisations, oldest first.

    ``current_only`` leaves out the rows a later verdict superseded: what clinical
    monitoring compares an algorithm against.
    """
    q = select(VerdictRow).order_by(VerdictRow.id)
    q = q.where(scope.where(VerdictRow.organisation_id))
    if algorithm_name:
        q = q.where(VerdictRow.algorithm_name == algorithm_name)
    if since is not None:
        q = q.where(VerdictRow.created_at >= since)
    if study_id is not None:
        q = q.where(VerdictRow.study_id == study_id)
    if current_only:
        newer = select(VerdictRow.supersedes_id).where(VerdictRow.supersedes_id.is_not(None))
        q = q.where(VerdictRow.id.not_in(newer))
    if limit is not None:
        q = q.limit(limit)
    return list(s.scalars(q))


def verdict_history(s: Session, study_id: int) -> list[VerdictEntry]:
    """Every verdict of a study, newest first, with who gave it and what replaced it."""
    rows = s.execute(
        select(VerdictRow, UserRow.username, UserRow.display_name)
        .join(UserRow, UserRow.id == VerdictRow.user_id)
        .where(VerdictRow.study_id == study_id)
        .order_by(VerdictRow.id.desc())
    ).all()
    replaced = {r.supersedes_id: r.id for r, _, _ in rows if r.supersedes_id is not None}
    return [VerdictEntry(r, u, d, replaced.get(r.id)) for r, u, d in rows]
