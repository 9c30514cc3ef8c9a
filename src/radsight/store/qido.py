"""QIDO-RS searches and WADO-RS look-ups over the study index (PS3.18 10.6, 10.4).

Queries come parsed (:class:`radsight.dicom.dicomweb_json.QidoQuery`); each search is one
SELECT on the indexed columns of studies, series and instances, scoped to the caller's
organisations, newest study first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, literal_column, or_, select
from sqlalchemy.orm import Session

from radsight.dicom.dicomweb_json import Match, QidoQuery
from radsight.errors import InvalidInput, NotFound
from radsight.store.scope import Scope
from radsight.store.tables import InstanceRow, SeriesRow, StudyRow

_ESCAPE = "!"

_STUDY_COLUMNS: dict[str, Any] = {
    "StudyInstanceUID": StudyRow.study_instance_uid,
    "PatientName": StudyRow.patient_name_search,
    "PatientID": StudyRow.patient_id,
    "StudyDate": StudyRow.study_date,
    "AccessionNumber": StudyRow.accession_number,
    "ModalitiesInStudy": StudyRow.modalities_in_study,
    "StudyDescription": StudyRow.study_description,
    "StudyID": StudyRow.dicom_study_id,
    "ReferringPhysicianName": func.upper(func.replace(StudyRow.referring_physician_name, "^", " ")),
}
_SERIES_COLUMNS: dict[str, Any] = {
    "SeriesInstanceUID": SeriesRow.series_instance_uid,
    "Modality": SeriesRow.modality,
    "SeriesNumber": SeriesRow.series_number,
    "SeriesDescription": SeriesRow.series_description,
    "BodyPartExamined": SeriesRow.body_part_examined,
}
_INSTANCE_COLUMNS: dict[str, Any] = {
    "SOPInstanceUID": InstanceRow.sop_instance_uid,
    "SOPClassUID": InstanceRow.sop_class_uid,
    "InstanceNumber": InstanceRow.instance_number,
}
_COLUMNS = {**_STUDY_COLUMNS, **_SERIES_COLUMNS, **_INSTANCE_COLUMNS}


def _literal(text: str) -> str:
    return (
        text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


def _wildcard(text: str) -> str:
    """DICOM wildcards (* any run, ? one character) as a LIKE pattern."""
    return _literal(text).replace("*", "%").replace("?", "_")


def _clause(match: Match) -> Any:
    column = _COLUMNS[match.keyword]
    if match.keyword == "ModalitiesInStudy":
        # any of the asked modalities among the study's backslash-separated ones
        return or_(
            *(
                or_(
                    column == m,
                    column.like(f"{_literal(m)}\\%", escape=_ESCAPE),
                    column.like(f"%\\{_literal(m)}", escape=_ESCAPE),
                    column.like(f"%\\{_literal(m)}\\%", escape=_ESCAPE),
                )
                for m in match.values
            )
        )
    if match.kind == "uid":
        return column == match.values[0] if len(match.values) == 1 else column.in_(match.values)
    if match.kind == "range":
        lo, hi = match.values
        clauses = [column != ""]
        if lo:
            clauses.append(column >= lo)
        if hi:
            clauses.append(column <= hi)
        return clauses[0] if len(clauses) == 1 else clauses[0] & _and(clauses[1:])
    if match.kind == "wildcard":
        return column.like(_wildcard(match.values[0]), escape=_ESCAPE)
    if match.kind == "words":
        # fuzzy: every word of the query starts some word of the name ("SMI JO" ~ "SMITH^JOHN")
        # (two LIKEs: SQLite rejects most rows on the first character of the first one)
        return _and(
            [
                or_(
                    column.like(f"{_literal(w)}%", escape=_ESCAPE),
                    column.like(f"% {_literal(w)}%", escape=_ESCAPE),
                )
                for w in match.values
            ]
        )
    value: Any = match.values[0]
    if match.keyword in ("SeriesNumber", "InstanceNumber"):
        value = int(value)
    return column == value


def _and(clauses: list[Any]) -> Any:
    out = clauses[0]
    for c in clauses[1:]:
        out = out & c
    return out


def _filtered(q: Select, query: QidoQuery, scope: Scope, org_column: Any) -> Select:
    if not scope.is_all:
        q = q.where(scope.where(org_column))
    for match in query.matches:
        q = q.where(_clause(match))
    return q


#: counting the rows after a page stops here (the Warning then says "more than")
COUNT_CAP = 1_000


def _page(s: Session, q: Select, query: QidoQuery, order: list[Any]) -> tuple[list, int]:
    """One page of rows, and how many more rows match after it: 0 when none, at most
    ``COUNT_CAP + 1`` (so a search matching most of a large table stays fast)."""
    rows = list(s.execute(q.order_by(*order).limit(query.limit + 1).offset(query.offset)))
    if len(rows) <= query.limit:
        return rows, 0
    after = (
        q.with_only_columns(literal_column("1"), maintain_column_froms=True)
        .order_by(None)
        .offset(query.offset + query.limit)
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    more = s.scalar(select(func.count()).select_from(after)) or 0
    return rows[: query.limit], int(more)


def search_studies(
    s: Session, query: QidoQuery, study_uid: str | None = None, *, scope: Scope
) -> tuple[list[StudyRow], int]:
    # the page's ids first (an index scan of (organisation_id, id) for a plain listing,
    # however deep the offset), then their rows
    q = select(StudyRow.id)
    if study_uid:
        q = q.where(StudyRow.study_instance_uid == study_uid)
    if any(m.keyword in _SERIES_COLUMNS or m.keyword in _INSTANCE_COLUMNS for m in query.matches):
        raise InvalidInput("study searches match study attributes only")
    q = _filtered(q, query, scope, StudyRow.organisation_id)
    ids, more = _page(s, q, query, [StudyRow.id.desc()])
    page = [i for (i,) in ids]
    rows = {r.id: r for r in s.scalars(select(StudyRow).where(StudyRow.id.in_(page)))}
    return [rows[i] for i in page], more


def search_series(
    s: Session, query: QidoQuery, study_uid: str | None = None, *, scope: Scope
) -> tuple[list[tuple[SeriesRow, StudyRow]], int]:
    q = select(SeriesRow, StudyRow).join(StudyRow, SeriesRow.study_id == StudyRow.id)
    if study_uid:
        q = q.where(StudyRow.study_instance_uid == study_uid)
    if any(m.keyword in _INSTANCE_COLUMNS for m in query.matches):
        raise InvalidInput("series searches match study and series attributes only")
    q = _filtered(q, query, scope, SeriesRow.organisation_id)
    order = [StudyRow.id.desc(), SeriesRow.series_number, SeriesRow.id]
    rows, more = _page(s, q, query, order)
    return [(se, st) for se, st in rows], more


def search_instances(
    s: Session,
    query: QidoQuery,
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    scope: Scope,
) -> tuple[list[tuple[InstanceRow, SeriesRow, StudyRow]], int]:
    q = (
        select(InstanceRow, SeriesRow, StudyRow)
        .join(SeriesRow, InstanceRow.series_id == SeriesRow.id)
        .join(StudyRow, InstanceRow.study_id == StudyRow.id)
    )
    if study_uid:
        q = q.where(StudyRow.study_instance_uid == study_uid)
    if series_uid:
        q = q.where(SeriesRow.series_instance_uid == series_uid)
    q = _filtered(q, query, scope, InstanceRow.organisation_id)
    order = [
        StudyRow.id.desc(),
        SeriesRow.series_number,
        SeriesRow.id,
        InstanceRow.instance_number,
        InstanceRow.id,
    ]
    rows, more = _page(s, q, query, order)
    return [(i, se, st) for i, se, st in rows], more


def ensure_study_visible(
    s: Session, study_uid: str, series_uid: str | None = None, *, scope: Scope
) -> None:
    """NotFound unless the caller may see this study (and series): a scoped QIDO-RS path."""
    q = select(StudyRow.id).where(StudyRow.study_instance_uid == study_uid)
    if series_uid:
        q = q.join(SeriesRow, SeriesRow.study_id == StudyRow.id).where(
            SeriesRow.series_instance_uid == series_uid
        )
    q = q.where(scope.where(StudyRow.organisation_id))
    if s.scalar(q.limit(1)) is None:
        level = "series" if series_uid else "study"
        raise NotFound(f"{level} {series_uid or study_uid} does not exist")


def find_instances(
    s: Session,
    study_uid: str,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    *,
    scope: Scope,
) -> list[tuple[InstanceRow, SeriesRow, StudyRow]]:
    """The instances a WADO-RS path names, in series and instance order; NotFound if none.

    Another organisation's study is not found either (tenancy: 404, never 403).
    """
    q = (
        select(InstanceRow, SeriesRow, StudyRow)
        .join(SeriesRow, InstanceRow.series_id == SeriesRow.id)
        .join(StudyRow, InstanceRow.study_id == StudyRow.id)
        .where(StudyRow.study_instance_uid == study_uid)
    )
    if series_uid:
        q = q.where(SeriesRow.series_instance_uid == series_uid)
    if sop_instance_uid:
        q = q.where(InstanceRow.sop_instance_uid == sop_instance_uid)
    q = q.where(scope.where(InstanceRow.organisation_id))
    q = q.order_by(
        SeriesRow.series_number, SeriesRow.id, InstanceRow.instance_number, InstanceRow.id
    )
    rows = [(i, se, st) for i, se, st in s.execute(q)]
    if not rows:
        what = sop_instance_uid or series_uid or study_uid
        level = "instance" if sop_instance_uid else "series" if series_uid else "study"
        raise NotFound(f"{level} {what} does not exist")
    return rows
