"""The radiologist's worklist: urgent first, then AI score (highest first), then newest.

Paging is by keyset over the index ``ix_studies_worklist (organisation_id, urgent,
ai_score, id)``, so the hundredth page costs what the first does. The order is read as
three segments, each one range of that index, because NULL scores sort differently on
SQLite and PostgreSQL:

0. urgent studies, score descending, id descending;
1. scored studies that are not urgent, score descending, id descending;
2. studies without a score yet (waiting, not analysed), id descending.

A cursor is ``<segment>:<score>:<id>`` of the last row shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Integer, and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from radsight.dicom.instances import name_for_search
from radsight.errors import InvalidInput, NotFound
from radsight.store.results import CLINICAL
from radsight.store.scope import Scope
from radsight.store.tables import InstanceRow, ResultRow, StudyRow

#: status filter -> what the worklist shows
STATUSES = ("waiting", "analysed", "not_analysed", "reviewed", "repeat_requested")
PAGE_SIZE_MAX = 200


@dataclass(frozen=True)
class WorklistQuery:
    #: the organisations whose studies the worklist shows
    scope: Scope
    study_type: str = ""
    status: str = ""
    received_from: datetime | None = None
    #: exclusive
    received_to: datetime | None = None
    #: the start of the patient name ("SMITH^JO"), or an exact patient ID or accession number
    search: str = ""
    cursor: str = ""
    limit: int = 50


@dataclass(frozen=True)
class WorklistPage:
    studies: list[StudyRow]
    #: cursor of the next page, "" on the last one
    next_cursor: str


def study_status(study: StudyRow) -> str:
    """One of :data:`STATUSES` for a study row."""
    if study.review_state in ("reviewed", "repeat_requested"):
        return study.review_state
    if study.state in ("receiving", "routed"):
        return "waiting"
    if study.state == "analysed":
        return "analysed"
    return "not_analysed"


def _status_clause(status: str) -> ColumnElement[bool]:
    if status in ("reviewed", "repeat_requested"):
        return StudyRow.review_state == status
    unreviewed = StudyRow.review_state.not_in(("reviewed", "repeat_requested"))
    states = {
        "waiting": ("receiving", "routed"),
        "analysed": ("analysed",),
        "not_analysed": ("not_analysed", "failed"),
    }[status]
    return and_(unreviewed, StudyRow.state.in_(states))


def parse_cursor(cursor: str) -> tuple[int, float | None, int]:
    try:
        seg_s, score_s, id_s = cursor.split(":")
        seg = int(seg_s)
        score = None if score_s == "" else float(score_s)
        last_id = int(id_s)
    except ValueError:
        raise InvalidInput(f"not a worklist cursor: {cursor[:40]!r}") from None
    if seg not in (0, 1, 2) or (seg < 2) == (score is None):
        raise InvalidInput(f"not a worklist cursor: {cursor[:40]!r}")
    return seg, score, last_id


def _cursor(seg: int, study: StudyRow) -> str:
    score = "" if seg == 2 or study.ai_score is None else repr(float(study.ai_score))
    return f"{seg}:{score}:{study.id}"


def _filters(q: WorklistQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if not q.scope.is_all:
        where.append(q.scope.where(StudyRow.organisation_id))
    if q.study_type:
        where.append(StudyRow.study_type == q.study_type)
    if q.status:
        if q.status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {q.status!r}")
        where.append(_status_clause(q.status))
    if q.received_from is not None:
        where.append(StudyRow.first_received_at >= q.received_from)
    if q.received_to is not None:
        where.append(StudyRow.first_received_at < q.received_to)
    return where


#: a search matching at most this many studies is read through its indexes first
SEARCH_CANDIDATES_MAX = 2000


def _name_prefix(text: str) -> tuple[str, str]:
    """The range of ``patient_name_search`` values that start with ``text``."""
    key = name_for_search(text)
    return key, (key[:-1] + chr(ord(key[-1]) + 1)) if key else ""


def _search_clause(text: str) -> ColumnElement[bool]:
    """Exact patient ID or accession number, or a name starting with the text."""
    lo, hi = _name_prefix(text)
    name = (
        and_(StudyRow.patient_name_search >= lo, StudyRow.patient_name_search < hi)
        if lo
        else StudyRow.id.is_(None)
    )
    return or_(StudyRow.patient_id == text, StudyRow.accession_number == text, name)


def _search_ids(s: Session, q: WorklistQuery, text: str) -> list[int] | None:
    """The studies a search matches, each branch through its own index; ``None`` if many.

    A single query with ``OR`` would walk the worklist index and test every study;
    three index lookups find a patient among 100,000 studies at once.
    """
    org = _filters(WorklistQuery(q.scope))
    lo, hi = _name_prefix(text)
    branches: list[ColumnElement[bool]] = [
        StudyRow.patient_id == text,
        StudyRow.accession_number == text,
    ]
    if lo:
        branches.append(and_(StudyRow.patient_name_search >= lo, StudyRow.patient_name_search < hi))
    ids: set[int] = set()
    for branch in branches:
        found = s.scalars(
            select(StudyRow.id).where(*org, branch).limit(SEARCH_CANDIDATES_MAX + 1)
        ).all()
        ids.update(found)
        if len(ids) > SEARCH_CANDIDATES_MAX:
            return None
    return sorted(ids)


def _segment(seg: int) -> list[ColumnElement[bool]]:
    if seg == 0:
        return [StudyRow.urgent.is_(True), StudyRow.ai_score.is_not(None)]
    if seg == 1:
        return [StudyRow.urgent.is_(False), StudyRow.ai_score.is_not(None)]
    return [StudyRow.urgent.is_(False), StudyRow.ai_score.is_(None)]


def list_worklist(s: Session, q: WorklistQuery) -> WorklistPage:
    """One page of the worklist after ``q.cursor`` (the first page without one)."""
    limit = max(1, min(q.limit, PAGE_SIZE_MAX))
    start_seg, score, last_id = parse_cursor(q.cursor) if q.cursor else (0, None, 0)
    base = _filters(q)
    text = q.search.strip()
    if text:
        ids = _search_ids(s, q, text)
        if ids is not None:
            return _page_of_few(s, base, ids, q.cursor, limit)
        base.append(_search_clause(text))
    found: list[tuple[int, StudyRow]] = []
    for seg in range(start_seg, 3):
        where = base + _segment(seg)
        if q.cursor and seg == start_seg:
            if seg < 2:
                where.append(tuple_(StudyRow.ai_score, StudyRow.id) < tuple_(score, last_id))
            else:
                where.append(StudyRow.id < last_id)
        order = [StudyRow.ai_score.desc(), StudyRow.id.desc()] if seg < 2 else [StudyRow.id.desc()]
        # one more than asked tells whether a next page exists
        want = limit + 1 - len(found)
        rows = s.scalars(select(StudyRow).where(*where).order_by(*order).limit(want)).all()
        found.extend((seg, r) for r in rows)
        if len(found) > limit:
            break
    page = found[:limit]
    next_cursor = _cursor(*page[-1]) if len(found) > limit else ""
    return WorklistPage([r for _, r in page], next_cursor)


def _page_of_few(
    s: Session, base: list[ColumnElement[bool]], ids: list[int], cursor: str, limit: int
) -> WorklistPage:
    """A page of a small set of studies (a search's), ordered here, not by the database.

    The same order and cursors as the segments of :func:`list_worklist`, without asking
    the planner to choose between the worklist index and a list of ids.
    """
    if not ids:
        return WorklistPage([], "")
    keys = s.execute(
        select(StudyRow.id, StudyRow.urgent, StudyRow.ai_score).where(*base, StudyRow.id.in_(ids))
    ).all()

    def key(row_id: int, urgent: bool, score: float | None) -> tuple[int, float, int] | None:
        if score is None:
            return None if urgent else (2, 0.0, -row_id)
        return (0 if urgent else 1, -score, -row_id)

    ordered = sorted(k for k in (key(*r) for r in keys) if k is not None)
    if cursor:
        seg, score, last_id = parse_cursor(cursor)
        after = (seg, -(score or 0.0), -last_id)
        ordered = [k for k in ordered if k > after]
    chosen = ordered[:limit]
    rows = {
        r.id: r for r in s.scalars(select(StudyRow).where(StudyRow.id.in_([-k[2] for k in chosen])))
    }
    page = [(k[0], rows[-k[2]]) for k in chosen]
    next_cursor = _cursor(*page[-1]) if len(ordered) > limit else ""
    return WorklistPage([r for _, r in page], next_cursor)


def count_worklist(s: Session, q: WorklistQuery) -> int:
    where = _filters(q)
    if q.search.strip():
        where.append(_search_clause(q.search.strip()))
    return int(s.scalar(select(func.count(StudyRow.id)).where(*where)) or 0)


def refresh_study_priority(s: Session, study_id: int) -> None:
    """Denormalise the study's results into its worklist columns.

    ``ai_score`` is the highest study score over its analysed clinical results (shadow
    and superseded ones never order a radiologist's worklist); ``urgent`` is whether any
    of them has an urgent finding over its threshold.
    """
    scored = s.execute(
        select(func.max(ResultRow.study_score), func.max(ResultRow.urgent.cast(Integer))).where(
            ResultRow.study_id == study_id, ResultRow.status == "analysed", *CLINICAL
        )
    ).one()
    top, any_urgent = scored
    s.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(ai_score=top, urgent=bool(any_urgent) and top is not None)
    )


def top_results(s: Session, study_ids: list[int]) -> dict[int, ResultRow]:
    """Per study, its analysed clinical result with the highest study score (one query
    per page)."""
    if not study_ids:
        return {}
    rows = s.scalars(
        select(ResultRow).where(
            ResultRow.study_id.in_(study_ids), ResultRow.status == "analysed", *CLINICAL
        )
    ).all()
    out: dict[int, ResultRow] = {}
    for r in sorted(rows, key=lambda r: (r.study_score or 0.0, r.id)):
        out[r.study_id] = r
    return out


def get_instance(s: Session, instance_id: int, *, scope: Scope) -> InstanceRow:
    """An instance by its row id (the viewer's frame URLs); another tenant's: NotFound."""
    row = s.get(InstanceRow, instance_id)
    if row is None or not scope.includes(row.organisation_id):
        raise NotFound(f"instance {instance_id} does not exist")
    return row
