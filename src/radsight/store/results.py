"""Results: one row per (study, algorithm version), analysed or not analysed.

An analysed result owns its stored outputs as ``ResultRow.objects``: ordered rows of
``result_objects``, each with its role (``sr``, ``sc``, ...) and SOP class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from radsight.algorithms.registry import version_key
from radsight.errors import NotFound
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import ResultObjectRow, ResultRow

#: what makes a result clinical and current: a radiologist sees it, the PACS receives it
CLINICAL = (ResultRow.mode == "clinical", ResultRow.superseded_by_id.is_(None))


def get_result_for(
    s: Session, study_id: int, algorithm_name: str, algorithm_version: str
) -> ResultRow | None:
    return s.scalar(
        select(ResultRow).where(
            ResultRow.study_id == study_id,
            ResultRow.algorithm_name == algorithm_name,
            ResultRow.algorithm_version == algorithm_version,
        )
    )


class StoredObject(Protocol):
    """What the store keeps of one output (``radsight.results.ResultObject`` has it)."""

    @property
    def role(self) -> str: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def series_instance_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def storage_key(self) -> str: ...


def _object_rows(objects: Sequence[StoredObject]) -> list[ResultObjectRow]:
    return [
        ResultObjectRow(
            position=i,
            role=o.role,
            sop_class_uid=o.sop_class_uid,
            series_instance_uid=o.series_instance_uid,
            sop_instance_uid=o.sop_instance_uid,
            storage_key=o.storage_key,
        )
        for i, o in enumerate(objects)
    ]


def save_result(
    s: Session, *, objects: Sequence[StoredObject] = (), **fields: object
) -> tuple[ResultRow, bool]:
    """Insert the result and its outputs unless it exists already (a rerun after a crash).

    ``objects`` are stored in the order given; ``mode`` (a field) is ``clinical`` or
    ``shadow``, as the version's admission state was when it ran; return (row, new).
    """
    existing = get_result_for(
        s,
        fields["study_id"],  # type: ignore[arg-type]
        fields["algorithm_name"],  # type: ignore[arg-type]
        fields["algorithm_version"],  # type: ignore[arg-type]
    )
    if existing is not None:
        return existing, False
    row = ResultRow(created_at=utcnow(), objects=_object_rows(objects), **fields)
    s.add(row)
    s.flush()
    return row, True


def replace_result(
    s: Session,
    row: ResultRow,
    *,
    revision: int,
    objects: Sequence[StoredObject] = (),
    **fields: object,
) -> ResultRow:
    """Replace a result in place with a re-analysis of the same version (``revision``).

    The row (its id, verdicts, supersession) stays; its fields, outputs and
    ``created_at`` (when this revision was made) are the new analysis's. The old outputs'
    rows go; their files stay where they lie (a delivery of the old revision that is
    still queued sends the new objects, which carry new UIDs).
    """
    row.objects.clear()
    s.flush()  # the old positions must be gone before the new ones are inserted
    for key, value in fields.items():
        setattr(row, key, value)
    row.revision = revision
    row.created_at = utcnow()
    row.objects.extend(_object_rows(objects))
    s.flush()
    return row


def save_revision(
    s: Session, *, revision: int, objects: Sequence[StoredObject] = (), **fields: object
) -> tuple[ResultRow, bool]:
    """Save revision ``revision`` of a (study, algorithm version) result; return (row, new).

    Revision 0 is :func:`save_result`. A higher one replaces an older revision in place
    (:func:`replace_result`); when the stored revision is that one already (a rerun of
    the re-analysis after a crash), the stored row is returned, not new.
    """
    if revision > 0:
        current = get_result_for(
            s,
            fields["study_id"],  # type: ignore[arg-type]
            fields["algorithm_name"],  # type: ignore[arg-type]
            fields["algorithm_version"],  # type: ignore[arg-type]
        )
        if current is not None:
            if current.revision >= revision:
                return current, False
            return replace_result(s, current, revision=revision, objects=objects, **fields), True
    return save_result(s, objects=objects, revision=revision, **fields)


def supersede_older(s: Session, result: ResultRow) -> list[ResultRow]:
    """Mark the current clinical analysed results of older versions of ``result``'s
    algorithm on its study as superseded by it, when it is a clinical analysed result
    that nothing supersedes (just made, re-made or promoted); return them. A shadow result
    supersedes nothing, and an older version never supersedes a newer one."""
    if result.mode != "clinical" or result.status != "analysed" or result.superseded_by_id:
        return []
    mine = version_key(result.algorithm_version)
    candidates = list(
        s.scalars(
            select(ResultRow).where(
                ResultRow.study_id == result.study_id,
                ResultRow.algorithm_name == result.algorithm_name,
                ResultRow.id != result.id,
                ResultRow.status == "analysed",
                ResultRow.mode == "clinical",
                ResultRow.superseded_by_id.is_(None),
            )
        )
    )
    # an older version never supersedes a newer one (a re-analysis by an older version)
    older = [r for r in candidates if version_key(r.algorithm_version) < mine]
    for row in older:
        row.superseded_by_id = result.id
    s.flush()
    return older


def get_result(s: Session, result_id: int, *, scope: Scope) -> ResultRow:
    row = s.get(ResultRow, result_id)
    if row is None or not scope.includes(row.organisation_id):
        raise NotFound(f"result {result_id} does not exist")
    return row


def list_results(
    s: Session,
    *,
    scope: Scope,
    study_id: int | None = None,
    limit: int = 100,
    clinical_only: bool = False,
) -> list[ResultRow]:
    """Results, newest first. ``clinical_only``: what a radiologist sees (no shadow
    results, none superseded by a newer clinical result of the same algorithm)."""
    q = select(ResultRow).order_by(ResultRow.id.desc()).limit(limit)
    q = q.where(scope.where(ResultRow.organisation_id))
    if study_id is not None:
        q = q.where(ResultRow.study_id == study_id)
    if clinical_only:
        q = q.where(*CLINICAL)
    return list(s.scalars(q))


def organisations_with_clinical(
    s: Session, algorithm_name: str, algorithm_version: str
) -> set[int]:
    """The organisations that have current clinical results of a version."""
    return set(
        s.scalars(
            select(ResultRow.organisation_id)
            .where(
                ResultRow.algorithm_name == algorithm_name,
                ResultRow.algorithm_version == algorithm_version,
                *CLINICAL,
            )
            .distinct()
        )
    )


def retract_clinical(
    s: Session, algorithm_name: str, algorithm_version: str, organisation_id: int
) -> list[int]:
    """Take a version's clinical results of one organisation off radiologists' views (they
    become shadow results: supervisors still see them); return the studies touched."""
    rows = s.scalars(
        select(ResultRow).where(
            ResultRow.algorithm_name == algorithm_name,
            ResultRow.algorithm_version == algorithm_version,
            ResultRow.organisation_id == organisation_id,
            ResultRow.mode == "clinical",
        )
    ).all()
    for r in rows:
        r.mode = "shadow"
        release_superseded(s, r.id)
    s.flush()
    return sorted({r.study_id for r in rows})


def release_superseded(s: Session, result_id: int) -> int:
    """A result that is no longer clinical and analysed supersedes nothing: the results it
    superseded are current again (an older approved version's, say); return how many."""
    rows = s.scalars(select(ResultRow).where(ResultRow.superseded_by_id == result_id)).all()
    for r in rows:
        r.superseded_by_id = None
    s.flush()
    return len(rows)
