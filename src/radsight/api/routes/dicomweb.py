"""DICOMweb: STOW-RS and QIDO-RS here, WADO-RS in :mod:`.dicomweb_wado` (PS3.18).

Base path ``/dicomweb``. Every route needs a token or a session (:data:`PrincipalDep`);
a caller sees only its organisations' studies, and another tenant's study is "not found"
(404), never "forbidden". STOW-RS ends in the same :func:`accept_instance` as C-STORE,
into the caller's organisation. See docs/dicomweb.md.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any, BinaryIO, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from radsight import auth
from radsight.api.audit import record_read
from radsight.api.auth import PrincipalDep
from radsight.api.deps import RuntimeDep, SessionDep
from radsight.api.routes import dicomweb_wado
from radsight.api.routes.dicomweb_wado import DICOM_JSON, base_url, negotiate_json
from radsight.auth import Principal
from radsight.dicom.dicomweb_json import QidoQuery, parse_qido, to_dicom_json
from radsight.dicom.instances import parse_part10
from radsight.dicom.multipart import PartSpan, index_parts, parse_media_type, read_part
from radsight.errors import (
    Forbidden,
    InstanceRejected,
    InvalidInput,
    MissingAttribute,
    NotDicom,
    RadsightError,
    TooLarge,
    UnsupportedMediaType,
)
from radsight.ingest.accept import accept_instance, check_instance_size, record_rejection
from radsight.ingest.statuses import status_for
from radsight.runtime import Runtime
from radsight.store import qido
from radsight.store import studies as studystore
from radsight.store.tables import InstanceRow, SeriesRow, StudyRow

log = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

QIDO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "matches as DICOM JSON"}
}


# --- QIDO-RS -----------------------------------------------------------------------------


def study_values(st: StudyRow, base: str) -> dict[str, Any]:
    return {
        "StudyDate": st.study_date,
        "StudyTime": st.study_time,
        "AccessionNumber": st.accession_number,
        "InstanceAvailability": "ONLINE",
        "ModalitiesInStudy": st.modalities_in_study or st.modality,
        "ReferringPhysicianName": st.referring_physician_name,
        "RetrieveURL": f"{base}/studies/{st.study_instance_uid}",
        "PatientName": st.patient_name,
        "PatientID": st.patient_id,
        "PatientBirthDate": st.patient_birth_date,
        "PatientSex": st.patient_sex,
        "StudyInstanceUID": st.study_instance_uid,
        "StudyID": st.dicom_study_id,
        "NumberOfStudyRelatedSeries": st.num_series,
        "NumberOfStudyRelatedInstances": st.num_instances,
        "StudyDescription": st.study_description,
    }


def series_values(se: SeriesRow, st: StudyRow, base: str) -> dict[str, Any]:
    return {
        "StudyInstanceUID": st.study_instance_uid,
        "Modality": se.modality,
        "SeriesInstanceUID": se.series_instance_uid,
        "SeriesNumber": se.series_number,
        "SeriesDescription": se.series_description,
        "BodyPartExamined": se.body_part_examined,
        "NumberOfSeriesRelatedInstances": se.num_instances,
        "RetrieveURL": f"{base}/studies/{st.study_instance_uid}/series/{se.series_instance_uid}",
    }


def instance_values(i: InstanceRow, se: SeriesRow, st: StudyRow, base: str) -> dict[str, Any]:
    attrs = i.attributes or {}
    return {
        "StudyInstanceUID": st.study_instance_uid,
        "SeriesInstanceUID": se.series_instance_uid,
        "SOPClassUID": i.sop_class_uid,
        "SOPInstanceUID": i.sop_instance_uid,
        "InstanceAvailability": "ONLINE",
        "InstanceNumber": i.instance_number,
        "Rows": attrs.get("Rows"),
        "Columns": attrs.get("Columns"),
        "BitsAllocated": attrs.get("BitsAllocated"),
        "NumberOfFrames": i.number_of_frames,
        "TransferSyntaxUID": i.transfer_syntax_uid,
        "RetrieveURL": (
            f"{base}/studies/{st.study_instance_uid}/series/{se.series_instance_uid}"
            f"/instances/{i.sop_instance_uid}"
        ),
    }


def _query(request: Request, level: str) -> QidoQuery:
    negotiate_json(request)
    rt: Runtime = request.app.state.runtime
    return parse_qido(
        request.query_params.multi_items(), level, max_values=rt.settings.max_query_values
    )


def _record_search(s: SessionDep, principal: Principal, request: Request, level: str) -> None:
    """The search in the audit trail (the query, not what it matched); called once the
    study in the path, if any, is known to be the caller's."""
    detail = {"level": level, "query": request.url.query[:1000], "via": "dicomweb"}
    record_read(s, principal, request, "study.search", detail=detail)


def _answer(request: Request, items: list[dict[str, Any]], query: QidoQuery, more: int) -> Response:
    """The matches, with the Warning headers of PS3.18 8.3.4.4 and 8.3.4.5."""
    response = JSONResponse(items, media_type=DICOM_JSON)
    agent = request.url.netloc or "radsight"
    if query.unsupported:
        keys = ", ".join(dict.fromkeys(query.unsupported))
        response.headers.append(
            "Warning", f'299 {agent} "The following query keys are not supported: {keys}"'
        )
    if more:
        count = f"more than {qido.COUNT_CAP}" if more > qido.COUNT_CAP else str(more)
        response.headers.append(
            "Warning", f'299 {agent} "There are {count} additional results that can be requested"'
        )
    return response


@router.get("/studies", responses=QIDO_RESPONSES, summary="QIDO-RS: search for studies")
def search_studies(request: Request, s: SessionDep, principal: PrincipalDep) -> Response:
    query = _query(request, "study")
    _record_search(s, principal, request, "study")
    rows, more = qido.search_studies(s, query, scope=auth.scope_of(s, principal))
    base, keys = base_url(request), query.attributes(["study"])
    return _answer(request, [to_dicom_json(study_values(r, base), keys) for r in rows], query, more)


def _series_answer(
    request: Request, s: SessionDep, principal: Principal, study: str | None
) -> Response:
    query = _query(request, "series")
    scope = auth.scope_of(s, principal)
    if study:
        qido.ensure_study_visible(s, study, scope=scope)
    _record_search(s, principal, request, "series")
    rows, more = qido.search_series(s, query, study, scope=scope)
    base = base_url(request)
    levels = ["series"] if study else ["study", "series"]
    keys = ["StudyInstanceUID", *query.attributes(levels)]
    items = []
    for se, st in rows:
        values = {**study_values(st, base), **series_values(se, st, base)}
        items.append(to_dicom_json(values, dict.fromkeys(keys)))
    return _answer(request, items, query, more)


@router.get(
    "/studies/{study}/series", responses=QIDO_RESPONSES, summary="QIDO-RS: a study's series"
)
def search_study_series(
    study: str, request: Request, s: SessionDep, principal: PrincipalDep
) -> Response:
    return _series_answer(request, s, principal, study)


@router.get("/series", responses=QIDO_RESPONSES, summary="QIDO-RS: search for series")
def search_all_series(request: Request, s: SessionDep, principal: PrincipalDep) -> Response:
    return _series_answer(request, s, principal, None)


def _instances_answer(
    request: Request,
    s: SessionDep,
    principal: Principal,
    study: str | None,
    series: str | None,
) -> Response:
    query = _query(request, "instance")
    scope = auth.scope_of(s, principal)
    if study:
        qido.ensure_study_visible(s, study, series, scope=scope)
    _record_search(s, principal, request, "instance")
    rows, more = qido.search_instances(s, query, study, series, scope=scope)
    base = base_url(request)
    levels = ["instance"] if series else ["series", "instance"] if study else list(LEVELS)
    keys = ["StudyInstanceUID", "SeriesInstanceUID", *query.attributes(levels)]
    items = []
    for i, se, st in rows:
        values = {
            **study_values(st, base),
            **series_values(se, st, base),
            **instance_values(i, se, st, base),
        }
        items.append(to_dicom_json(values, dict.fromkeys(keys)))
    return _answer(request, items, query, more)


LEVELS = ("study", "series", "instance")


@router.get(
    "/studies/{study}/series/{series}/instances",
    responses=QIDO_RESPONSES,
    summary="QIDO-RS: a series' instances",
)
def search_series_instances(
    study: str, series: str, request: Request, s: SessionDep, principal: PrincipalDep
) -> Response:
    return _instances_answer(request, s, principal, study, series)


@router.get(
    "/studies/{study}/instances", responses=QIDO_RESPONSES, summary="QIDO-RS: a study's instances"
)
def search_study_instances(
    study: str, request: Request, s: SessionDep, principal: PrincipalDep
) -> Response:
    return _instances_answer(request, s, principal, study, None)


@router.get("/instances", responses=QIDO_RESPONSES, summary="QIDO-RS: search for instances")
def search_all_instances(request: Request, s: SessionDep, principal: PrincipalDep) -> Response:
    return _instances_answer(request, s, principal, None, None)


# --- STOW-RS -----------------------------------------------------------------------------

STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "every instance stored"},
    202: {"description": "some instances stored, the others failed (FailedSOPSequence)"},
    409: {"description": "no instance stored (FailedSOPSequence says why)"},
}


@router.post("/studies", responses=STOW_RESPONSES, summary="STOW-RS: store instances")
async def store_instances(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    return await _stow(request, rt, principal, None)


@router.post(
    "/studies/{study}", responses=STOW_RESPONSES, summary="STOW-RS: store instances of a study"
)
async def store_study_instances(
    study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    return await _stow(request, rt, principal, study)


async def _stow(request: Request, rt: Runtime, principal: Principal, study: str | None) -> Response:
    if principal.organisation_id is None:
        raise Forbidden(
            "a platform admin token belongs to no organisation: store with a token of the "
            "organisation the studies belong to"
        )
    content_type = request.headers.get("content-type", "")
    media = parse_media_type(content_type)
    if media.media_type != "multipart/related" or media.type not in ("", "application/dicom"):
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom" '
            f"(got {content_type or 'no Content-Type'})"
        )
    spool_dir = rt.settings.data_dir / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    # the body past a small threshold goes to an unnamed file in <data_dir>/spool, closed
    # (and so removed) however the request ends: a disconnect, a 413, a crash
    with tempfile.SpooledTemporaryFile(
        max_size=rt.settings.stow_spool_memory_bytes, dir=str(spool_dir)
    ) as spool:
        body = cast(BinaryIO, spool)
        await read_body_into(request, rt.settings.max_request_bytes, body)
        try:
            parts = await run_in_threadpool(index_parts, body, content_type)
        except InvalidInput as exc:
            raise UnsupportedMediaType(f"cannot read the multipart body: {exc}") from exc
        outcome = await run_in_threadpool(
            _store_parts, rt, principal.organisation_id, body, parts, study, base_url(request)
        )
    return JSONResponse(outcome.body, status_code=outcome.status, media_type=DICOM_JSON)


async def read_body_into(request: Request, limit: int, out: BinaryIO) -> None:
    """Write the request body to ``out``, refused with 413 past ``max_request_bytes``.

    A declared Content-Length over the limit was refused before a byte was read (by the
    app's middleware, for every route); a chunked body is counted as it arrives and cut
    at the limit.
    """
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(
                f"the request body is more than max_request_bytes ({limit} bytes): it was cut there"
            )
        out.write(chunk)


class _StowOutcome:
    """What a STOW-RS request did, as its answer (PS3.18 10.5.3)."""

    def __init__(self) -> None:
        self.study_url = ""
        self.stored: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.study_ids: set[int] = set()
        self.study_uids: list[str] = []

    @property
    def status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    @property
    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if len(set(self.study_uids)) == 1:
            out.update(to_dicom_json({"RetrieveURL": self.study_url}, ["RetrieveURL"]))
        if self.failed:
            out["00081198"] = {"vr": "SQ", "Value": self.failed}
        if self.stored:
            out["00081199"] = {"vr": "SQ", "Value": self.stored}
        return out


def _store_parts(
    rt: Runtime,
    organisation_id: int,
    body: BinaryIO,
    parts: list[PartSpan],
    study: str | None,
    base: str,
) -> _StowOutcome:
    """Each part through accept_instance, one part in memory at a time; a failure is
    recorded and answered per instance."""
    outcome = _StowOutcome()
    for part in parts:
        headers = part.headers
        part_type = parse_media_type(headers.get("content-type", "application/dicom"))
        sop_class = sop_instance = ""
        try:
            if part_type.media_type != "application/dicom":
                raise NotDicom(f"a part of type {part_type.media_type} is not application/dicom")
            try:
                check_instance_size(rt, part.size)
                parsed = parse_part10(
                    read_part(body, part),
                    max_sequence_depth=rt.settings.max_sequence_depth,
                    max_inflated_bytes=rt.settings.max_instance_bytes,
                )
            except InstanceRejected as exc:
                record_rejection(rt, exc, source="stow", organisation_id=organisation_id)
                raise
            sop_class, sop_instance = parsed.sop_class_uid, parsed.sop_instance_uid
            if study and parsed.study_instance_uid != study:
                mismatch = MissingAttribute(
                    f"instance {sop_instance} is of study {parsed.study_instance_uid}, "
                    f"not of {study} that the request names"
                )
                record_rejection(
                    rt,
                    mismatch,
                    source="stow",
                    organisation_id=organisation_id,
                    sop_instance_uid=sop_instance,
                )
                raise mismatch
            accepted = accept_instance(rt, parsed, organisation_id=organisation_id, source="stow")
        except RadsightError as exc:
            item: dict[str, Any] = {}
            if sop_class:
                item.update(
                    to_dicom_json(
                        {
                            "ReferencedSOPClassUID": sop_class,
                            "ReferencedSOPInstanceUID": sop_instance,
                        },
                        ["ReferencedSOPClassUID", "ReferencedSOPInstanceUID"],
                    )
                )
            # PS3.18 Table 10.5.3-1 and the C-STORE statuses of PS3.4 B.2.3
            item["00081197"] = {"vr": "US", "Value": [status_for(exc.code)]}
            outcome.failed.append(item)
            continue
        study_uid = accepted.study_instance_uid
        outcome.study_ids.add(accepted.study_id)
        outcome.study_uids.append(study_uid)
        outcome.study_url = f"{base}/studies/{study_uid}"
        series_uid = parsed.series_instance_uid
        outcome.stored.append(
            to_dicom_json(
                {
                    "ReferencedSOPClassUID": sop_class,
                    "ReferencedSOPInstanceUID": sop_instance,
                    "RetrieveURL": f"{base}/studies/{study_uid}/series/{series_uid}"
                    f"/instances/{sop_instance}",
                },
                ["ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "RetrieveURL"],
            )
        )
    if outcome.study_ids:
        # a STOW request is a whole delivery: its studies need not wait for a quiet period
        with rt.db.session() as s:
            studystore.mark_ready_now(s, sorted(outcome.study_ids))
    log.info(
        "STOW-RS: %d stored, %d failed for organisation %d",
        len(outcome.stored),
        len(outcome.failed),
        organisation_id,
    )
    return outcome


router.include_router(dicomweb_wado.router)
