"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered images, thumbnails.

Every retrieve is scoped to the caller's organisations (404 for another tenant's study)
and recorded in the audit trail before any data is sent: instances and metadata as
``study.retrieve``, one event per request; frames, bulk data, rendered images and
thumbnails, which a viewer fetches by the hundred, as ``study.images``, at most one event
per user, address and study a minute (see docs/security.md, "The audit trail").
Media types follow the ``Accept`` header, or 406. A stored
file that no longer reads or decodes is a 500 ``stored_object_unreadable`` (see
:mod:`radsight.dicom.stored`), never a 406 or a 400.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Annotated

import pydicom
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydicom.uid import UID, ExplicitVRLittleEndian

from radsight import auth
from radsight.api.audit import record_read
from radsight.api.auth import PrincipalDep
from radsight.api.deps import RuntimeDep, SessionDep
from radsight.auth import Principal
from radsight.dicom.dicomweb_json import dataset_to_json
from radsight.dicom.multipart import MediaRange, iter_parts, new_boundary, parse_accept
from radsight.dicom.rendering import (
    encapsulated_frame,
    native_frame,
    parse_render_options,
    render_frame,
)
from radsight.dicom.stored import decoding_stored, read_stored
from radsight.errors import InvalidInput, NotAcceptable, NotFound, StoredObjectUnreadable
from radsight.runtime import Runtime
from radsight.store import qido
from radsight.store.tables import InstanceRow, SeriesRow, StudyRow

log = logging.getLogger(__name__)

#: included by radsight.api.routes.dicomweb under its /dicomweb prefix
router = APIRouter(tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
_JSON_TYPES = {DICOM_JSON, "application/json", "application/*", "*/*"}
_ANY_PART = {"", "*/*", "application/*"}
#: compressed transfer syntaxes and the media type of their frames (PS3.18 Table 8.7.4-1)
_FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}
_RENDERED = {
    "image/jpeg": "image/jpeg",
    "image/png": "image/png",
    "image/*": "image/jpeg",
    "*/*": "image/jpeg",
}

Rows = list[tuple[InstanceRow, SeriesRow, StudyRow]]
RenderQuery = Annotated[str | None, Query(description="center,width[,linear|sigmoid]")]
ViewportQuery = Annotated[str | None, Query(description="vw,vh[,sx,sy,sw,sh]")]
QualityQuery = Annotated[str | None, Query(description="JPEG quality 1-100")]


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


def _as_transfer_syntax(data: bytes, stored: str, wanted: str, what: str) -> tuple[bytes, str]:
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
    ds = read_stored(data, what)
    try:
        if UID(stored).is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except Exception as exc:  # the codecs raise many kinds; the client asked for nothing wrong
        raise StoredObjectUnreadable(
            f"stored object {what} cannot be converted from {stored} to "
            f"{ExplicitVRLittleEndian}: {exc}"
        ) from exc
    return out.getvalue(), ExplicitVRLittleEndian


def _find(
    s: SessionDep,
    principal: Principal,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Rows:
    return qido.find_instances(s, study, series, instance, scope=auth.scope_of(s, principal))


def _audit(
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


def _image_of(
    s: SessionDep, principal: Principal, request: Request, rows: Rows, what: str
) -> InstanceRow:
    """The instance of a frame, bulk data or rendered request, its read recorded."""
    _audit(s, principal, request, rows[:1], what, "study.images")
    return rows[0][0]


def _read(rt: Runtime, row: InstanceRow) -> pydicom.Dataset:
    return read_stored(rt.files.get(row.storage_key), row.sop_instance_uid)


# --- instances -----------------------------------------------------------------------------


def _instances_response(
    request: Request, s: SessionDep, rt: Runtime, principal: Principal, rows: Rows, what: str
) -> Response:
    wanted = _negotiate_dicom(request)
    keys = [(i.storage_key, i.transfer_syntax_uid) for i, _se, _st in rows]
    boundary = new_boundary()

    def parts() -> Iterator[tuple[str, bytes]]:
        for key, stored in keys:
            data, syntax = _as_transfer_syntax(rt.files.get(key), stored, wanted, key)
            yield f"application/dicom; transfer-syntax={syntax}", data

    if wanted not in ("*", "", ExplicitVRLittleEndian) and any(ts != wanted for _k, ts in keys):
        # fail with 406 before the first byte is sent, not in the middle of a stream
        raise NotAcceptable(
            f"instances are available as stored or as {ExplicitVRLittleEndian}, not {wanted}"
        )
    _audit(s, principal, request, rows, what)
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
    return _instances_response(request, s, rt, principal, _find(s, principal, study), "study")


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    study: str,
    series: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = _find(s, principal, study, series)
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
    rows = _find(s, principal, study, series, instance)
    return _instances_response(request, s, rt, principal, rows, "series instance")


# --- metadata ------------------------------------------------------------------------------


def _metadata(
    request: Request, s: SessionDep, rt: Runtime, principal: Principal, rows: Rows, what: str
) -> Response:
    negotiate_json(request)
    _audit(s, principal, request, rows, what + " metadata")
    base = base_url(request)
    items = []
    for i, se, st in rows:
        url = (
            f"{base}/studies/{st.study_instance_uid}/series/{se.series_instance_uid}"
            f"/instances/{i.sop_instance_uid}/bulkdata/"
        )
        items.append(dataset_to_json(_read(rt, i), url.__add__))
    return JSONResponse(items, media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
def study_metadata(
    study: str, request: Request, s: SessionDep, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    return _metadata(request, s, rt, principal, _find(s, principal, study), "study")


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata")
def series_metadata(
    study: str,
    series: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = _find(s, principal, study, series)
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
    rows = _find(s, principal, study, series, instance)
    return _metadata(request, s, rt, principal, rows, "series instance")


# --- frames and bulk data ------------------------------------------------------------------


def _negotiate_frames(request: Request, stored: str) -> tuple[str, str]:
    """("native" | "stored", the part's content type) for the frames the client accepts."""
    native = ("native", f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    stored_media = _FRAME_MEDIA.get(stored, "")
    for r in parse_accept(request.headers.get("accept")):
        if r.media_type in ("*/*", "multipart/*", "application/octet-stream"):
            return native
        if r.media_type != "multipart/related":
            continue
        if r.type in ("application/octet-stream", *_ANY_PART):
            if r.transfer_syntax in ("", "*", ExplicitVRLittleEndian):
                return native
        elif stored_media and _type_matches(r, stored_media):
            if r.transfer_syntax in ("", "*", stored):
                return "stored", f"{stored_media}; transfer-syntax={stored}"
    offer = "application/octet-stream" + (f" or {stored_media} ({stored})" if stored_media else "")
    raise NotAcceptable(f"frames of this instance are available as {offer}")


def _type_matches(r: MediaRange, media: str) -> bool:
    return r.type == media or (r.type.endswith("/*") and media.startswith(r.type[:-1]))


def _frame_numbers(frames: str, count: int) -> list[int]:
    try:
        numbers = [int(f) for f in frames.split(",") if f.strip()]
    except ValueError:
        raise InvalidInput(
            f"frames must be a comma-separated list of numbers, not {frames!r}"
        ) from None
    if not numbers:
        raise InvalidInput("no frame numbers given")
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise NotFound(f"the instance has frames 1-{count}; there is no frame {bad[0]}")
    return numbers


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    summary="WADO-RS: retrieve frames (uncompressed, or as stored)",
)
def retrieve_frames(
    study: str,
    series: str,
    instance: str,
    frames: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = _find(s, principal, study, series, instance)
    row = _image_of(s, principal, request, rows, "series instance frames")
    numbers = _frame_numbers(frames, row.number_of_frames)
    how, part_type = _negotiate_frames(request, row.transfer_syntax_uid)
    ds = _read(rt, row)
    if "PixelData" not in ds:
        raise NotFound(f"instance {instance} has no pixel data")
    limit = rt.settings.max_frame_pixels
    with decoding_stored(row.sop_instance_uid):
        parts = [
            (
                part_type,
                native_frame(ds, n, max_frame_pixels=limit)
                if how == "native"
                else encapsulated_frame(ds, n),
            )
            for n in numbers
        ]
    boundary = new_boundary()
    main = part_type.split(";")[0]
    return Response(
        b"".join(iter_parts(parts, boundary)),
        media_type=f'multipart/related; type="{main}"; boundary={boundary}',
    )


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    summary="WADO-RS: retrieve a bulk data value (BulkDataURI of the metadata)",
)
def retrieve_bulkdata(
    study: str,
    series: str,
    instance: str,
    tag: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    rows = _find(s, principal, study, series, instance)
    row = _image_of(s, principal, request, rows, "series instance bulkdata")
    ds = _read(rt, row)
    try:
        element = ds[int(tag, 16)] if len(tag) == 8 else None
    except (ValueError, KeyError):
        element = None
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound(f"instance {instance} has no bulk data {tag}")
    if element.tag == 0x7FE00010 and UID(row.transfer_syntax_uid).is_compressed:
        with decoding_stored(row.sop_instance_uid):
            limit = rt.settings.max_frame_pixels
            value = b"".join(
                native_frame(ds, n, max_frame_pixels=limit)
                for n in range(1, row.number_of_frames + 1)
            )
    else:
        value = bytes(element.value)
    boundary = new_boundary()
    parts = [("application/octet-stream", value)]
    return Response(
        b"".join(iter_parts(parts, boundary)),
        media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )


# --- rendered and thumbnails ---------------------------------------------------------------


def _rendered(
    request: Request,
    rt: Runtime,
    row: InstanceRow,
    frame: int,
    window: str | None,
    viewport: str | None,
    quality: str | None,
    default_viewport: str | None = None,
) -> Response:
    media = next(
        (
            _RENDERED[r.media_type]
            for r in parse_accept(request.headers.get("accept"))
            if r.media_type in _RENDERED
        ),
        None,
    )
    if media is None:
        raise NotAcceptable("rendered images are image/jpeg or image/png")
    options = parse_render_options(
        window,
        viewport or default_viewport,
        quality,
        max_render_pixels=rt.settings.max_render_pixels,
    )
    if not 1 <= frame <= row.number_of_frames:
        raise NotFound(f"the instance has frames 1-{row.number_of_frames}; there is no {frame}")
    ds = _read(rt, row)
    with decoding_stored(row.sop_instance_uid):
        image = render_frame(
            ds, frame, options, media, max_frame_pixels=rt.settings.max_frame_pixels
        )
    return Response(image, media_type=media)


def _single_frame(frame: str) -> int:
    try:
        return int(frame)
    except ValueError:
        raise InvalidInput(f"a rendered frame is one number, not {frame!r}") from None


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    summary="WADO-RS: an instance rendered (its first frame) as JPEG or PNG",
)
def rendered_instance(
    study: str,
    series: str,
    instance: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
    window: RenderQuery = None,
    viewport: ViewportQuery = None,
    quality: QualityQuery = None,
) -> Response:
    rows = _find(s, principal, study, series, instance)
    row = _image_of(s, principal, request, rows, "series instance rendered")
    return _rendered(request, rt, row, 1, window, viewport, quality)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
    summary="WADO-RS: a frame rendered as JPEG or PNG",
)
def rendered_frame(
    study: str,
    series: str,
    instance: str,
    frame: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
    window: RenderQuery = None,
    viewport: ViewportQuery = None,
    quality: QualityQuery = None,
) -> Response:
    rows = _find(s, principal, study, series, instance)
    row = _image_of(s, principal, request, rows, "series instance rendered")
    return _rendered(request, rt, row, _single_frame(frame), window, viewport, quality)


THUMBNAIL_VIEWPORT = "128,128"


def _representative(rows: Rows) -> InstanceRow:
    """The middle image of the first series with pixels (what a thumbnail shows)."""
    images = [i for i, _se, _st in rows if (i.attributes or {}).get("Rows")]
    if not images:
        raise NotFound("there is no image to show")
    first_series = images[0].series_id
    same = [i for i in images if i.series_id == first_series]
    return same[len(same) // 2]


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: a study's thumbnail")
def study_thumbnail(
    study: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
    viewport: ViewportQuery = None,
) -> Response:
    rows = _find(s, principal, study)
    _audit(s, principal, request, rows, "study thumbnail", "study.images")
    row = _representative(rows)
    return _rendered(request, rt, row, 1, None, viewport, None, THUMBNAIL_VIEWPORT)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: a series' thumbnail")
def series_thumbnail(
    study: str,
    series: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
    viewport: ViewportQuery = None,
) -> Response:
    rows = _find(s, principal, study, series)
    _audit(s, principal, request, rows, "series thumbnail", "study.images")
    row = _representative(rows)
    return _rendered(request, rt, row, 1, None, viewport, None, THUMBNAIL_VIEWPORT)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    summary="WADO-RS: an instance's thumbnail",
)
def instance_thumbnail(
    study: str,
    series: str,
    instance: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
    viewport: ViewportQuery = None,
) -> Response:
    rows = _find(s, principal, study, series, instance)
    row = _image_of(s, principal, request, rows, "series instance thumbnail")
    return _rendered(request, rt, row, 1, None, viewport, None, THUMBNAIL_VIEWPORT)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
    summary="WADO-RS: a frame's thumbnail",
)
def frame_thumbnail(
    study: str,
    series: str,
    instance: str,
    frame: str,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    principal: PrincipalDep,
    viewport: ViewportQuery = None,
) -> Response:
    rows = _find(s, principal, study, series, instance)
    row = _image_of(s, principal, request, rows, "series instance thumbnail")
    return _rendered(
        request, rt, row, _single_frame(frame), None, viewport, None, THUMBNAIL_VIEWPORT
    )
