"""WADO-RS frames, bulk data, rendered images and thumbnails (PS3.18 10.4): the requests
that decode pixel data.

Before any decode the pixel data is checked (:func:`radsight.dicom.codestream.check_pixel_data`:
what each compressed frame declares, ``max_frame_pixels`` and ``max_instance_pixels``), and
only what is asked for is decoded: a frame, a rendered frame, or, for a frame list and the
Pixel Data bulk data, frame after frame as the answer is streamed, so that a request never
holds more than one decoded frame. A stored file that does not decode is a 500
``stored_object_unreadable`` (:mod:`radsight.dicom.stored`). Routes are included by
:mod:`radsight.api.routes.dicomweb_wado`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import UID, ExplicitVRLittleEndian

from radsight.api.auth import PrincipalDep
from radsight.api.deps import RuntimeDep, SessionDep
from radsight.api.routes.dicomweb_access import Rows, audit, find, image_of, read
from radsight.dicom.multipart import MediaRange, iter_parts, new_boundary, parse_accept
from radsight.dicom.rendering import (
    encapsulated_frame,
    native_frames,
    parse_render_options,
    render_frame,
)
from radsight.dicom.stored import decoding_stored
from radsight.errors import InvalidInput, NotAcceptable, NotFound
from radsight.runtime import Runtime
from radsight.store.tables import InstanceRow

router = APIRouter(tags=["dicomweb"])

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

RenderQuery = Annotated[str | None, Query(description="center,width[,linear|sigmoid]")]
ViewportQuery = Annotated[str | None, Query(description="vw,vh[,sx,sy,sw,sh]")]
QualityQuery = Annotated[str | None, Query(description="JPEG quality 1-100")]


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
    rows = find(s, principal, study, series, instance)
    row = image_of(s, principal, request, rows, "series instance frames")
    numbers = _frame_numbers(frames, row.number_of_frames)
    how, part_type = _negotiate_frames(request, row.transfer_syntax_uid)
    ds = read(rt, row)
    if "PixelData" not in ds:
        raise NotFound(f"instance {instance} has no pixel data")
    what = row.sop_instance_uid
    with decoding_stored(what):  # checked here: a refusal is the answer, not a cut stream
        pending = (
            native_frames(ds, numbers, **_limits(rt))
            if how == "native"
            else (encapsulated_frame(ds, n) for n in numbers)
        )

    def frame_parts() -> Iterator[tuple[str, bytes]]:
        # one frame decoded at a time: a long list never holds more than one decoded frame
        while True:
            with decoding_stored(what):
                data = next(pending, None)
            if data is None:
                return
            yield part_type, data

    boundary = new_boundary()
    main = part_type.split(";")[0]
    return StreamingResponse(
        _first_then_rest(frame_parts(), boundary),
        media_type=f'multipart/related; type="{main}"; boundary={boundary}',
    )


def _limits(rt: Runtime) -> dict[str, int]:
    return {
        "max_frame_pixels": rt.settings.max_frame_pixels,
        "max_instance_pixels": rt.settings.max_instance_pixels,
    }


def _first_then_rest(parts: Iterator[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """The multipart body, its first part made before the response starts (an error in it
    is then the answer); a later failure can only end the stream, and is logged."""
    first = next(parts, None)

    def all_parts() -> Iterator[tuple[str, bytes]]:
        if first is not None:
            yield first
        yield from parts

    return iter_parts(all_parts(), boundary)


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
    rows = find(s, principal, study, series, instance)
    row = image_of(s, principal, request, rows, "series instance bulkdata")
    ds = read(rt, row)
    try:
        element = ds[int(tag, 16)] if len(tag) == 8 else None
    except (ValueError, KeyError):
        element = None
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound(f"instance {instance} has no bulk data {tag}")
    boundary = new_boundary()
    media = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    if element.tag == 0x7FE00010 and UID(row.transfer_syntax_uid).is_compressed:
        what = row.sop_instance_uid
        with decoding_stored(what):
            pending = native_frames(ds, range(1, row.number_of_frames + 1), **_limits(rt))

        def chunks() -> Iterator[bytes]:
            # one part, its value decoded and sent frame by frame (never all frames at once)
            yield f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            while True:
                with decoding_stored(what):
                    data = next(pending, None)
                if data is None:
                    break
                yield data
            yield f"\r\n--{boundary}--\r\n".encode()

        stream = chunks()
        first = [next(stream), next(stream)]  # the first frame before the response starts
        return StreamingResponse(itertools.chain(first, stream), media_type=media)
    parts = [("application/octet-stream", bytes(element.value))]
    return Response(b"".join(iter_parts(parts, boundary)), media_type=media)


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
    ds = read(rt, row)
    with decoding_stored(row.sop_instance_uid):
        image = render_frame(ds, frame, options, media, **_limits(rt))
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
    rows = find(s, principal, study, series, instance)
    row = image_of(s, principal, request, rows, "series instance rendered")
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
    rows = find(s, principal, study, series, instance)
    row = image_of(s, principal, request, rows, "series instance rendered")
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
    rows = find(s, principal, study)
    audit(s, principal, request, rows, "study thumbnail", "study.images")
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
    rows = find(s, principal, study, series)
    audit(s, principal, request, rows, "series thumbnail", "study.images")
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
    rows = find(s, principal, study, series, instance)
    row = image_of(s, principal, request, rows, "series instance thumbnail")
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
    rows = find(s, principal, study, series, instance)
    row = image_of(s, principal, request, rows, "series instance thumbnail")
    return _rendered(
        request, rt, row, _single_frame(frame), None, viewport, None, THUMBNAIL_VIEWPORT
    )
