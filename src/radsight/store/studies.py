"""Studies, series, instances and rejections."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radsight.dicom.instances import ParsedInstance, index_attributes, name_for_search
from radsight.errors import NotFound
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import InstanceRow, RejectionRow, SeriesRow, StudyRow

RowT = TypeVar("RowT", StudyRow, SeriesRow)


def instance_exists(s: Session, organisation_id: int, sop_instance_uid: str) -> bool:
    return (
        s.scalar(
            select(InstanceRow.id).where(
                InstanceRow.organisation_id == organisation_id,
                InstanceRow.sop_instance_uid == sop_instance_uid,
            )
        )
        is not None
    )


def get_instance(s: Session, organisation_id: int, sop_instance_uid: str) -> InstanceRow | None:
    """The organisation's instance with this SOP Instance UID, if it was accepted."""
    return s.scalar(
        select(InstanceRow).where(
            InstanceRow.organisation_id == organisation_id,
            InstanceRow.sop_instance_uid == sop_instance_uid,
        )
    )


def study_id_for_instance(s: Session, organisation_id: int, sop_instance_uid: str) -> int:
    sid = s.scalar(
        select(InstanceRow.study_id).where(
            InstanceRow.organisation_id == organisation_id,
            InstanceRow.sop_instance_uid == sop_instance_uid,
        )
    )
    if sid is None:
        raise NotFound(f"instance {sop_instance_uid} not found")
    return sid


def add_instance(
    s: Session,
    *,
    organisation_id: int,
    parsed: ParsedInstance,
    storage_key: str,
    size: int,
    sha256: str,
    study_type: str,
    quiet_period_s: float,
    calling_ae_title: str,
) -> tuple[int, bool]:
    """Index a stored instance; return (study id, whether the instance is new).

    The study's quiet period restarts with each new instance while it is still receiving.
    An instance arriving after the study was routed is stored and indexed but does not
    start a second analysis (one result per algorithm version).
    """
    now = utcnow()
    attrs = parsed.attributes
    index = index_attributes(parsed.dataset)
    modality = str(attrs.get("Modality", ""))[:16]
    study_query = select(StudyRow).where(
        StudyRow.organisation_id == organisation_id,
        StudyRow.study_instance_uid == parsed.study_instance_uid,
    )
    study = s.scalar(study_query)
    if study is None:
        study = StudyRow(
            organisation_id=organisation_id,
            study_instance_uid=parsed.study_instance_uid,
            study_type=study_type,
            state="receiving",
            modality=str(attrs.get("Modality", ""))[:16],
            study_date=str(parsed.dataset.get("StudyDate", "") or "")[:8],
            study_description=str(attrs.get("StudyDescription", ""))[:64],
            num_instances=0,
            patient_name=index["PatientName"],
            patient_name_search=name_for_search(str(index["PatientName"]))[:256],
            patient_id=index["PatientID"],
            patient_birth_date=index["PatientBirthDate"],
            patient_sex=index["PatientSex"],
            accession_number=index["AccessionNumber"],
            dicom_study_id=index["StudyID"],
            study_time=index["StudyTime"],
            referring_physician_name=index["ReferringPhysicianName"],
            modalities_in_study="",
            num_series=0,
            first_received_at=now,
            last_received_at=now,
            ready_at=now + timedelta(seconds=quiet_period_s),
        )
        study = _insert_or_get(s, study, study_query)
    series_query = select(SeriesRow).where(
        SeriesRow.study_id == study.id,
        SeriesRow.series_instance_uid == parsed.series_instance_uid,
    )
    series = s.scalar(series_query)
    if series is None:
        series = SeriesRow(
            organisation_id=organisation_id,
            study_id=study.id,
            series_instance_uid=parsed.series_instance_uid,
            modality=str(attrs.get("Modality", ""))[:16],
            body_part_examined=str(attrs.get("BodyPartExamined", ""))[:16],
            series_description=str(attrs.get("SeriesDescription", ""))[:64],
            series_number=index["SeriesNumber"],
            num_instances=0,
        )
        created = series
        series = _insert_or_get(s, created, series_query)
        if series is created:
            s.execute(
                update(StudyRow)
                .where(StudyRow.id == study.id)
                .values(num_series=StudyRow.num_series + 1)
            )
        if not study.patient_name_search and index["PatientName"]:
            # a study indexed before its patient fields existed (migration 0003)
            _fill_patient_fields(study, index)
    if instance_exists(s, organisation_id, parsed.sop_instance_uid):
        return study.id, False
    s.add(
        InstanceRow(
            organisation_id=organisation_id,
            study_id=study.id,
            series_id=series.id,
            sop_instance_uid=parsed.sop_instance_uid,
            sop_class_uid=parsed.sop_class_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            storage_key=storage_key,
            size=size,
            sha256=sha256,
            attributes=attrs,
            calling_ae_title=calling_ae_title,
            received_at=now,
            instance_number=index["InstanceNumber"],
            number_of_frames=index["NumberOfFrames"],
        )
    )
    s.execute(
        update(SeriesRow)
        .where(SeriesRow.id == series.id)
        .values(num_instances=SeriesRow.num_instances + 1)
    )
    values: dict[str, object] = {
        "num_instances": StudyRow.num_instances + 1,
        "last_received_at": now,
    }
    modalities = [m for m in (study.modalities_in_study or "").split("\\") if m]
    if modality and modality not in modalities:
        values["modalities_in_study"] = "\\".join(sorted([*modalities, modality]))[:64]
    if study.state == "receiving":
        values["ready_at"] = now + timedelta(seconds=quiet_period_s)
        if not study.study_type and study_type:
            values["study_type"] = study_type
    s.execute(update(StudyRow).where(StudyRow.id == study.id).values(**values))
    try:
        s.flush()
    except IntegrityError:  # a concurrent re-send of the same instance won the race
        s.rollback()
        return study.id, False
    return study.id, True


def _insert_or_get(s: Session, row: RowT, query: Select[RowT]) -> RowT:
    """Insert ``row``, or return the row another gateway or association inserted first.

    Two associations may bring the first instances of one study at the same moment (on
    one gateway or on two); the loser's insert breaks the unique constraint inside a
    savepoint and it reads the winner's row instead of failing the C-STORE.
    """
    try:
        with s.begin_nested():
            s.add(row)
            s.flush()
        return row
    except IntegrityError:
        existing = s.scalar(query)
        if existing is None:
            raise
        return existing


def _fill_patient_fields(study: StudyRow, index: dict[str, object]) -> None:
    study.patient_name = str(index["PatientName"])
    study.patient_name_search = name_for_search(study.patient_name)[:256]
    study.patient_id = str(index["PatientID"])
    study.patient_birth_date = str(index["PatientBirthDate"])
    study.patient_sex = str(index["PatientSex"])
    study.accession_number = str(index["AccessionNumber"])
    study.dicom_study_id = str(index["StudyID"])
    study.study_time = str(index["StudyTime"])
    study.referring_physician_name = str(index["ReferringPhysicianName"])


def create_rejection(s: Session, **fields: object) -> RejectionRow:
    row = RejectionRow(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


#: refused-association rows one address may start per ``rejection_record_interval_s``
MAX_REFUSAL_ROWS_PER_ADDRESS = 8


def record_refused_association(
    s: Session,
    *,
    organisation_id: int | None,
    calling_ae_title: str,
    remote_addr: str,
    error_code: str,
    message: str,
    interval_s: float,
    attempts: int = 1,
    match_title: bool = True,
) -> tuple[RejectionRow, bool]:
    """One row per (reason, AE title, address, organisation) per ``interval_s`` (without
    ``match_title``: per (reason, address, organisation), whatever the title): a repeat
    within the interval counts on the row (``count``, ``last_at``) instead of adding one.
    An address that already has ``MAX_REFUSAL_ROWS_PER_ADDRESS`` rows in the interval
    gets no more: the attempts count on its newest row.

    Returns the row and whether it is new (the caller logs only new rows).
    """
    now = utcnow()
    row = None
    if interval_s > 0:
        org = (
            RejectionRow.organisation_id.is_(None)
            if organisation_id is None
            else RejectionRow.organisation_id == organisation_id
        )
        recent = (
            RejectionRow.source == "association",
            RejectionRow.remote_addr == remote_addr,
            RejectionRow.created_at >= now - timedelta(seconds=interval_s),
        )
        q = select(RejectionRow).where(*recent, RejectionRow.error_code == error_code, org)
        if match_title:
            q = q.where(RejectionRow.calling_ae_title == calling_ae_title)
        row = s.scalar(q.order_by(RejectionRow.id.desc()).limit(1))
        if row is None:
            rows_here = s.scalar(select(func.count()).select_from(RejectionRow).where(*recent))
            if (rows_here or 0) >= MAX_REFUSAL_ROWS_PER_ADDRESS:
                q = select(RejectionRow).where(*recent)
                row = s.scalar(q.order_by(RejectionRow.id.desc()).limit(1))
    if row is not None:
        row.count += attempts
        row.last_at = now
        s.flush()
        return row, False
    row = RejectionRow(
        organisation_id=organisation_id,
        source="association",
        calling_ae_title=calling_ae_title,
        remote_addr=remote_addr,
        error_code=error_code,
        message=message,
        count=attempts,
        created_at=now,
        last_at=now,
    )
    s.add(row)
    s.flush()
    return row, True


def list_rejections(s: Session, *, scope: Scope, limit: int = 100) -> list[RejectionRow]:
    """Newest first; a rejection from an unknown caller (no organisation) only in ALL."""
    q = select(RejectionRow).order_by(RejectionRow.id.desc()).limit(limit)
    return list(s.scalars(q.where(scope.where(RejectionRow.organisation_id))))


def get_study(s: Session, study_id: int, *, scope: Scope) -> StudyRow:
    """The study, or NotFound: another tenant's study reads as one that does not exist."""
    row = s.get(StudyRow, study_id)
    if row is None or not scope.includes(row.organisation_id):
        raise NotFound(f"study {study_id} does not exist")
    return row


def list_studies(
    s: Session,
    *,
    scope: Scope,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[StudyRow]:
    q = select(StudyRow).order_by(StudyRow.id.desc()).limit(limit).offset(offset)
    q = q.where(scope.where(StudyRow.organisation_id))
    if state:
        q = q.where(StudyRow.state == state)
    return list(s.scalars(q))


def list_instances(s: Session, study_id: int) -> list[tuple[InstanceRow, SeriesRow]]:
    q = (
        select(InstanceRow, SeriesRow)
        .join(SeriesRow, InstanceRow.series_id == SeriesRow.id)
        .where(InstanceRow.study_id == study_id)
        .order_by(SeriesRow.id, InstanceRow.id)
    )
    return [(i, se) for i, se in s.execute(q)]


def find_studies(
    s: Session,
    *,
    scope: Scope,
    study_instance_uids: Sequence[str] = (),
    organisation_id: int | None = None,
    received_since: datetime | None = None,
    received_until: datetime | None = None,
    limit: int,
) -> tuple[list[StudyRow], int]:
    """Studies by Study Instance UID and/or organisation and first-received time
    (``received_until`` exclusive), oldest first; return (at most ``limit`` of them, how
    many match)."""
    where = [scope.where(StudyRow.organisation_id)]
    if study_instance_uids:
        where.append(StudyRow.study_instance_uid.in_(list(study_instance_uids)))
    if organisation_id is not None:
        where.append(StudyRow.organisation_id == organisation_id)
    if received_since is not None:
        where.append(StudyRow.first_received_at >= received_since)
    if received_until is not None:
        where.append(StudyRow.first_received_at < received_until)
    total = int(s.scalar(select(func.count(StudyRow.id)).where(*where)) or 0)
    rows = s.scalars(select(StudyRow).where(*where).order_by(StudyRow.id).limit(limit))
    return list(rows), total


def count_instances(s: Session, *, scope: Scope) -> int:
    q = select(func.count(InstanceRow.id)).where(scope.where(InstanceRow.organisation_id))
    return int(s.scalar(q) or 0)


def studies_due(s: Session, limit: int = 100) -> Sequence[StudyRow]:
    """Receiving studies whose quiet period has ended, locked until the caller commits.

    Several gateways assemble at once on one PostgreSQL database: each skips the studies
    another one is routing (``FOR UPDATE SKIP LOCKED``), so a study is routed once. SQLite
    ignores the clause; its writers are serialised by ``BEGIN IMMEDIATE``.
    """
    q = (
        select(StudyRow)
        .where(StudyRow.state == "receiving", StudyRow.ready_at <= utcnow())
        .order_by(StudyRow.ready_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(s.scalars(q))


def mark_ready_now(s: Session, study_ids: Sequence[int]) -> None:
    """End the quiet period of receiving studies now (a STOW request or upload ended)."""
    if study_ids:
        s.execute(
            update(StudyRow)
            .where(StudyRow.id.in_(list(study_ids)), StudyRow.state == "receiving")
            .values(ready_at=utcnow())
        )


def set_study_state(
    s: Session, study_id: int, state: str, reason: str = "", **extra: object
) -> None:
    s.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(state=state, state_reason=reason, **extra)
    )
