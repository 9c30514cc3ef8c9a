"""Finding and reading the instances of a WADO-RS request: scoped to the caller's
organisations (404 for another tenant's study), each read recorded in the audit trail
(see :mod:`radsight.api.routes.dicomweb_wado`)."""

from __future__ import annotations

import pydicom
from fastapi import Request

from radsight import auth
from radsight.api.audit import record_read
from radsight.api.deps import SessionDep
from radsight.auth import Principal
from radsight.dicom.stored import read_stored
from radsight.runtime import Runtime
from radsight.store import qido
from radsight.store.tables import InstanceRow, SeriesRow, StudyRow

Rows = list[tuple[InstanceRow, SeriesRow, StudyRow]]


def find(
    s: SessionDep,
    principal: Principal,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Rows:
    return qido.find_instances(s, study, series, instance, scope=auth.scope_of(s, principal))


def audit(
    s: SessionDep,
    principal: Principal,
    request: Request,
    rows: Rows,
    what: str,
    action: str = "study.retrieve",
) -> None:
    """One event per study read (``study.images``: throttled, see the module docstring)."""
    seen: set[int] = set()
    for _i, se, st in rows:
        if st.id in seen:
            continue
        seen.add(st.id)
        record_read(
            s,
            principal,
            request,
            action,
            organisation_id=st.organisation_id,
            study_id=st.id,
            detail={
                "resource": what,
                "study_instance_uid": st.study_instance_uid,
                "series_instance_uid": se.series_instance_uid if "series" in what else "",
                "via": "dicomweb",
            },
            throttle=action == "study.images",
        )


def image_of(
    s: SessionDep, principal: Principal, request: Request, rows: Rows, what: str
) -> InstanceRow:
    """The instance of a frame, bulk data or rendered request, its read recorded."""
    audit(s, principal, request, rows[:1], what, "study.images")
    return rows[0][0]


def read(rt: Runtime, row: InstanceRow) -> pydicom.Dataset:
    return read_stored(rt.files.get(row.storage_key), row.sop_instance_uid)
