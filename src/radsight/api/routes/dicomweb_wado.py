"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered images, thumbnails.

Every retrieve is scoped to the caller's organisations (404 for another tenant's study)
and recorded in the audit trail before any data is sent: instances and metadata as
``study.retrieve``, one event per request; frames, bulk data, rendered images and
thumbnails, which a viewer fetches by the hundred, as ``study.images``, at most one event
per user, address and study a minute (see docs/security.md, "The audit trail").
Frames, bulk data, rendered images and thumbnails (the requests that decode pixel data)
are in :mod:`radsight.api.routes.dicomweb_frames`, included here. Media types follow the
``Accept`` header, or 406. A stored
file that no longer reads or decodes is a 500 ``stored_object_unreadable`` (see
:mod:`radsight.dicom.stored`), never a 406 or a 400.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydicom.uid import UID, ExplicitVRLittleEndian

from radsight.api.auth import PrincipalDep
from radsight.api.deps import RuntimeDep, SessionDep
from radsight.api.routes import dicomweb_frames
from radsight.api.routes.dicomweb_access import Rows, audit, find, read
from radsight.auth import Principal
from radsight.dicom.dicomweb_json import dataset_to_json
from radsight.dicom.multipart import iter_parts, new_boundary, parse_accept
from radsight.dicom.stored import stored_as_explicit_little
from radsight.errors import NotAcceptable
from radsight.runtime import Runtime

log = logging.getLogger(__name__)

#: included by radsight.api.routes.dicomweb under its /dicomweb prefix
router = APIRouter(tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
_JSON_TYPES = {DICOM_JSON, "application/json", "application/*", "*/*"}
_ANY_PART = {"", "*/*", "application/*"}


def base_url(request: Request) -> str:
    """Where this server's DICOMweb is, for RetrieveURL and BulkDataURI values.

    The ``public_url`` setting when set; otherwise the request's own URL, with the port
    the connection came in on when the Host header leaves it out (dicomweb-client does).
    """
    public = request.app.state.runtime.settings.public_url
    if public:
        return public.rstrip("/") + "/dicomweb"
    url = request.base_url
    server = request.scope.get("server")
    if ":" not in request.headers.get("host", ":") and server and server[1]:
        default = {"http": 80, "https": 443}.get(url.scheme)
        if server[1] != default:
            url = url.replace(port=server[1])
    return str(url).rstrip("/") + "/dicomweb"


def negotiate_json(request: Request) -> None:
    accepted = parse_accept(request.headers.get("accept"))
    if not any(r.media_type in _JSON_TYPES for r in accepted):
        raise NotAcceptable(f"this resource is {DICOM_JSON}; the request accepts none of it")


def _negotiate_dicom(request: Request) -> str:
    """The transfer syntax asked for: a UID, ``*`` (as stored), or ``""`` (the default)."""
    for r in parse_accept(request.headers.get("accept")):
        if r.media_type in ("*/*", "multipart/*"):
            return "*"
        if r.media_type in ("multipart/related", "application/dicom") and (
            r.media_type == "application/dicom" or r.type in ("application/dicom", *_ANY_PART)
        ):
            return r.transfer_syntax
    raise NotAcceptable('instances are multipart/related; type="application/dicom"')


def _as_transfer_syntax(
    rt: Runtime, data: bytes, stored: str, wanted: str, what: str
) -> tuple[bytes, str]:
    """The instance in the transfer syntax asked for (PS3.18 8.7.3.5)."""
    if wanted in ("*", stored):
        return data, stored
    if wanted not in ("", ExplicitVRLittleEndian):
        raise NotAcceptable(
            f"instances are available as stored ({stored}) or as {ExplicitVRLittleEndian}"
        )
    if UID(stored).is_compressed and wanted == "":
        return data, stored  # no syntax asked for: compressed pixels are not expanded
    if stored == ExplicitVRLittleEndian:
        return data, stored
    converted = stored_as_explicit_little(
        data,
        what,
        max_frame_pixels=rt.settings.max_frame_pixels,
        max_instance_pixels=rt.settings.max_instance_pixels,
    )
    return converted, ExplicitVRLittleEndian


# --- instances -----------------------------------------------------------------------------


def _instances_response(
    request: Request, s: SessionDep, rt: Runtime, principal: Principal, rows: Rows, what: str
) -> Response:
    wanted = _negotiate_dicom(request)
    keys = [(i.storage_key, i.transfer_syntax_uid) for i, _se, _st in rows]
    boundary = new_boundary()

    def parts() -> Iterator[tuple[str, bytes]]:
        for key, stored in keys:
            data, syntax = _as_transfer_syntax(rt, rt.files.get(key), stored, wanted, key)
            yield f"application/dicom; transfer-syntax={syntax}", data

    if wanted not in ("*", "", ExplicitVRLittleEndian) and any(ts != wanted for _k, ts in keys):
        # fail with 406 before the first byte is sent, not in the middle of a stream
        raise NotAcceptable(
            f"instances are available as stored or as {ExplicitVRLittleEndian}, not {wanted}"
        )
    audit(s, principal, request, rows, what)
    # the first part before the first byte: a stored instance that cannot be converted is
    # then a 500 answer (a later one can only end the stream, and is logged)
    stream = parts()
    first = next(stream, None)

    def all_parts() -> Iterator[tuple[str, bytes]]:
        if first is not None:
            yield first
        yield from stream

    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(iter_parts(all_parts(), boundary), media_type=media)


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study's instances")
def retrieve_study(
    study: str, request: Request, s: SessionDep, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    return _instances_response(request, s, rt, principal, find(s, principal, study), "study")


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    study: str,
    series: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = find(s, principal, study, series)
    return _instances_response(request, s, rt, principal, rows, "series")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="WADO-RS: retrieve an instance",
)
def retrieve_instance(
    study: str,
    series: str,
    instance: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = find(s, principal, study, series, instance)
    return _instances_response(request, s, rt, principal, rows, "series instance")


# --- metadata ------------------------------------------------------------------------------


def _metadata(
    request: Request, s: SessionDep, rt: Runtime, principal: Principal, rows: Rows, what: str
) -> Response:
    negotiate_json(request)
    audit(s, principal, request, rows, what + " metadata")
    base = base_url(request)
    items = []
    for i, se, st in rows:
        url = (
            f"{base}/studies/{st.study_instance_uid}/series/{se.series_instance_uid}"
            f"/instances/{i.sop_instance_uid}/bulkdata/"
        )
        items.append(dataset_to_json(read(rt, i), url.__add__))
    return JSONResponse(items, media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
def study_metadata(
    study: str, request: Request, s: SessionDep, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    return _metadata(request, s, rt, principal, find(s, principal, study), "study")


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata")
def series_metadata(
    study: str,
    series: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = find(s, principal, study, series)
    return _metadata(request, s, rt, principal, rows, "series")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="WADO-RS: an instance's metadata",
)
def instance_metadata(
    study: str,
    series: str,
    instance: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = find(s, principal, study, series, instance)
    return _metadata(request, s, rt, principal, rows, "series instance")


# frames, bulk data, rendered images and thumbnails: radsight.api.routes.dicomweb_frames
router.include_router(dicomweb_frames.router)
