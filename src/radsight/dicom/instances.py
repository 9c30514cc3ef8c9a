"""Reading and checking one incoming instance (pure: pydicom only).

The checks here are the ones every entry point shares (C-STORE, import, later STOW-RS and
upload): they turn whatever bytes arrived into either a checked :class:`ParsedInstance` or
a precise :class:`~radsight.errors.InstanceRejected` subclass.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache

import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from radsight.errors import (
    InstanceRejected,
    MalformedDicom,
    MissingAttribute,
    MissingPixelData,
    NotDicom,
    SopClassMismatch,
    TooLarge,
    UnsupportedSopClass,
)
from radsight.redact import redact_values

#: attributes kept on the instance row for routing and input checks (PS3.3 keywords)
ROUTING_KEYWORDS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsStored",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "ImageType",
    "ProtocolName",
    "StudyDescription",
    "SeriesDescription",
    "RequestedProcedureDescription",
    "Manufacturer",
    "ManufacturerModelName",
    "StationName",
    "PresentationIntentType",
    "ConvolutionKernel",
    "InstanceNumber",
)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@lru_cache(maxsize=1)
def storage_sop_classes() -> frozenset[str]:
    """Every storage SOP class pydicom knows (PS3.4 Annex B), retired ones included."""
    from pydicom._uid_dict import UID_dictionary

    return frozenset(
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and "Commitment" not in name
    )


def is_image_storage(sop_class_uid: str) -> bool:
    """Image SOP classes, whose IODs require the Image Pixel module."""
    name = UID(sop_class_uid).name
    return "Image Storage" in name


@dataclass(frozen=True)
class ParsedInstance:
    dataset: Dataset
    #: Part 10 bytes (preamble, file meta, data set) exactly as they will be stored
    part10: bytes
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    attributes: dict[str, object]


#: the default of ``max_sequence_depth`` (config.py): see docs/security.md
DEFAULT_MAX_SEQUENCE_DEPTH = 32


def parse_part10(
    data: bytes,
    negotiated_sop_class_uid: str | None = None,
    *,
    max_sequence_depth: int = DEFAULT_MAX_SEQUENCE_DEPTH,
    max_inflated_bytes: int | None = None,
) -> ParsedInstance:
    """Parse and check a Part 10 file, or a bare data set (which gets a file meta).

    ``max_sequence_depth`` bounds how deep sequences nest; ``max_inflated_bytes`` how
    large a deflated data set (1.2.840.10008.1.2.1.99) may inflate (None: no bound).
    Raises an :class:`~radsight.errors.InstanceRejected` subclass naming what is wrong.
    """
    if len(data) < 8:
        raise NotDicom(f"{len(data)} bytes is too short to be DICOM")
    has_preamble = data[128:132] == b"DICM"
    if has_preamble and max_inflated_bytes is not None:
        _check_inflated_size(data, max_inflated_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read_until_end_of_data_set(data, force=not has_preamble)
            if not _looks_like_dicom(ds):
                raise NotDicom("the data set does not decode to DICOM data elements")
            # the lengths first: walking the data set (the depth check) turns its raw
            # elements into values, and a truncated value no longer shows its declared length
            _check_declared_lengths(ds)
            check_sequence_depth(ds, max_sequence_depth)
            _force_full_parse(ds)
    except InstanceRejected:
        raise
    except InvalidDicomError as exc:
        raise NotDicom(f"not a DICOM file: {_reason(exc)}") from exc
    except RecursionError as exc:
        raise MalformedDicom(
            "sequences nest too deep to read (more than max_sequence_depth): refused"
        ) from exc
    except (EOFError, struct.error, OSError, OverflowError, MemoryError) as exc:
        raise MalformedDicom(f"truncated or malformed DICOM ({_reason(exc)})") from exc
    except Exception as exc:  # pydicom raises many kinds on garbage input
        raise MalformedDicom(f"undecodable DICOM ({_reason(exc)})") from exc
    try:
        if not has_preamble:
            if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
                raise NotDicom("no DICM preamble and no SOP Class/Instance UID: not a DICOM file")
            parsed = check_dataset(ds, b"", negotiated_sop_class_uid)
            return dataclasses.replace(parsed, part10=_with_file_meta(ds))
        return check_dataset(ds, data, negotiated_sop_class_uid)
    except InstanceRejected:
        raise
    except Exception as exc:  # a value pydicom could parse but not interpret
        raise MalformedDicom(f"undecodable DICOM ({_reason(exc)})") from exc


#: explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


def _data_set_offset(data: bytes) -> int:
    """Where the data set starts: after the preamble and the file meta group (0002)."""
    return _file_meta(data)[0]


def _file_meta(data: bytes) -> tuple[int, bytes]:
    """Where the data set starts, and the raw Transfer Syntax UID (0002,0010) of the meta."""
    pos = 132 if data[128:132] == b"DICM" else 0
    syntax = b""
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            start, length = pos + 12, struct.unpack_from("<I", data, pos + 8)[0]
        else:
            start, length = pos + 8, struct.unpack_from("<H", data, pos + 6)[0]
        if struct.unpack_from("<H", data, pos + 2)[0] == 0x0010:
            syntax = data[start : start + length].rstrip(b"\0 ")
        pos = start + length
    return pos, syntax


#: what the inflater hands back at a time: memory stays bounded by this, not the output
_INFLATE_STEP = 1024 * 1024


def _check_inflated_size(data: bytes, limit: int) -> None:
    """A deflated data set inflating past ``limit`` bytes is refused before pydicom, which
    inflates it whole, sees it (a few kilobytes of zeros deflate 1000:1: a bomb)."""
    start, syntax = _file_meta(data)
    if syntax != DeflatedExplicitVRLittleEndian.encode():
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pending = data[start:]
    try:
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, _INFLATE_STEP))
            pending = inflater.unconsumed_tail
            if total > limit:
                raise TooLarge(
                    f"the deflated data set inflates to more than max_instance_bytes "
                    f"({limit} bytes): a deflate bomb is refused"
                )
    except zlib.error as exc:
        raise MalformedDicom(f"the deflated data set does not inflate ({exc})") from exc


def sequence_depth(ds: Dataset) -> int:
    """How deep sequences nest in ``ds`` (0: none), walked with a list, not recursion."""
    deepest = 0
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        for elem in current:
            if elem.VR == "SQ" and elem.value:
                stack.extend((item, depth + 1) for item in elem.value)
    return deepest


def check_sequence_depth(ds: Dataset, limit: int) -> None:
    """Refuse a data set whose sequences nest deeper than ``max_sequence_depth``."""
    depth = sequence_depth(ds)
    if depth > limit:
        raise MalformedDicom(
            f"sequences nest {depth} deep, more than max_sequence_depth ({limit}): refused"
        )


def _reason(exc: BaseException) -> str:
    """An exception as a refusal's reason, without the element value it may quote."""
    return f"{type(exc).__name__}: {redact_values(str(exc))}"[:300]


def _read_until_end_of_data_set(data: bytes, *, force: bool) -> Dataset:
    """Read the data set, refusing bytes after its end (trailing garbage).

    pydicom reads to the end of the file: 64 MiB of zeros after a data set are 8 million
    empty elements tagged (0000,0000), half a minute of CPU, and they would be stored.
    Tags of a data set ascend (PS3.5 7.1); the first top-level tag that does not (zeros,
    garbage) or that belongs to the command group (0000) ends the data set here, and
    whatever follows it is refused.
    """
    start = _data_set_offset(data)
    if start + 4 <= len(data) and struct.unpack_from("<H", data, start)[0] == 0:
        # pydicom would read all of it as a command set (group 0000) before the data set
        raise MalformedDicom(
            f"{len(data) - start} bytes after the end of the data set (at byte {start}): "
            "no data set follows the file meta"
        )
    last = [-1]

    def ended(tag: int, _vr: str | None, _length: int) -> bool:
        if tag >> 16 == 0 or tag < last[0]:
            return True
        last[0] = tag
        return False

    fp = io.BytesIO(data)
    ds = read_partial(fp, stop_when=ended, force=force)
    # a deflated data set is inflated into another buffer: the position is in that one
    end = (
        fp.tell()
        if ds.file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian
        else len(data)
    )
    if end < len(data):
        raise MalformedDicom(
            f"{len(data) - end} bytes after the end of the data set (at byte {end}): "
            "trailing data is refused"
        )
    return ds


def check_dataset(
    ds: Dataset, part10: bytes, negotiated_sop_class_uid: str | None = None
) -> ParsedInstance:
    """The checks every accepted instance passes (PS3.4 B.2.3 statuses map to these)."""
    uids = {}
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    # some modalities leave the data set's SOP UIDs empty but fill the file meta (PS3.10 7.1)
    fallback = {
        "SOPClassUID": meta.get("MediaStorageSOPClassUID", ""),
        "SOPInstanceUID": meta.get("MediaStorageSOPInstanceUID", ""),
    }
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds.get(kw, "") or fallback.get(kw, "") or "").strip()
        if not value:
            raise MissingAttribute(f"{kw} is missing or empty")
        if len(value) > 64 or not UID(value).is_valid:
            raise MissingAttribute(f"{kw} {value[:80]!r} is not a valid UID (PS3.5 9.1)")
        uids[kw] = value
    sop_class = uids["SOPClassUID"]
    if negotiated_sop_class_uid and sop_class != negotiated_sop_class_uid:
        raise SopClassMismatch(
            f"data set SOP Class {sop_class} differs from the negotiated {negotiated_sop_class_uid}"
        )
    if sop_class not in storage_sop_classes():
        raise UnsupportedSopClass(f"SOP Class {sop_class} is not a storage SOP class we accept")
    tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
    if not UID(tsyntax).is_transfer_syntax:
        raise MalformedDicom(f"Transfer Syntax UID {tsyntax[:80]!r} is not a transfer syntax")
    if is_image_storage(sop_class):
        if not any(kw in ds for kw in _PIXEL_KEYWORDS):
            raise MissingPixelData(f"{UID(sop_class).name} instance has no Pixel Data (7FE0,0010)")
        _check_pixel_length(ds)
    return ParsedInstance(
        dataset=ds,
        part10=part10,
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=sop_class,
        transfer_syntax_uid=tsyntax,
        attributes=routing_attributes(ds),
    )


def routing_attributes(ds: Dataset) -> dict[str, object]:
    """The attributes routing and input checks need, as JSON-friendly values."""
    out: dict[str, object] = {}
    for kw in ROUTING_KEYWORDS:
        elem = ds.get(kw)
        if elem is None or elem == "":
            continue
        if isinstance(elem, pydicom.multival.MultiValue | list | tuple):
            out[kw] = [_plain(v) for v in elem]
        else:
            out[kw] = _plain(elem)
    return out


#: study, series and instance attributes the index keeps for searching (QIDO-RS, worklist);
#: patient identifiers among them are stored in the database, never logged
INDEX_KEYWORDS = {
    "PatientName": 256,
    "PatientID": 64,
    "PatientBirthDate": 8,
    "PatientSex": 16,
    "AccessionNumber": 64,
    "StudyID": 16,
    "StudyTime": 32,
    "ReferringPhysicianName": 256,
}


def index_attributes(ds: Dataset) -> dict[str, object]:
    """What the database indexes for search (PS3.18 Table 10.6.1-5), as plain values.

    Text values are stripped and cut to their column's length; ``SeriesNumber``,
    ``InstanceNumber`` are ``None`` when absent or not an integer; ``NumberOfFrames``
    is at least 1.
    """
    out: dict[str, object] = {}
    for kw, size in INDEX_KEYWORDS.items():
        try:
            value = ds.get(kw, "")
        except Exception:  # an undecodable value is not worth refusing the instance
            value = ""
        out[kw] = str(value if value is not None else "").strip()[:size]
    out["SeriesNumber"] = _int_or_none(ds, "SeriesNumber")
    out["InstanceNumber"] = _int_or_none(ds, "InstanceNumber")
    out["NumberOfFrames"] = max(1, _int_or_none(ds, "NumberOfFrames") or 1)
    return out


def name_for_search(patient_name: str) -> str:
    """A Person Name as fuzzy matching compares it: upper case, components as words."""
    alphabetic = patient_name.split("=")[0]
    return " ".join(alphabetic.replace("^", " ").upper().split())


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


def _plain(value: object) -> object:
    if isinstance(value, int | float | str):
        return value if not isinstance(value, str) else str(value).strip()
    try:
        return float(value)  # type: ignore[arg-type]  # DS/IS
    except (TypeError, ValueError):
        return str(value).strip()


def _check_declared_lengths(ds: Dataset) -> None:
    """A value shorter than its declared length: truncated data or an absurd length field."""
    for raw in list(ds._dict.values()):
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if length is None or length == 0xFFFFFFFF or not isinstance(value, bytes):
            continue
        if len(value) < length:
            raise MalformedDicom(
                f"element {raw.tag} declares {length} bytes but only {len(value)} remain: "
                "truncated data or an absurd length"
            )


def _looks_like_dicom(ds: Dataset) -> bool:
    """Garbage parsed with force yields unknown tags in odd places; a data set does not.

    A data set starts with group 0008 (or 0002/0004 in files), and most of its tags are in
    the data dictionary; private tags count only in the low groups where vendors put them.
    """
    tags = list(ds.keys())
    if not tags or tags[0].group not in (0x0002, 0x0004, 0x0008):
        return False
    known = sum(1 for t in tags if dictionary_has_tag(t) or (t.is_private and t.group < 0x1000))
    return known >= max(1, len(tags) // 2)


def _force_full_parse(ds: Dataset) -> None:
    """pydicom parses lazily: touch every element so bad lengths fail here, not later."""
    for elem in ds.iterall():
        _ = elem.value
    for elem in getattr(ds, "file_meta", None) or []:
        _ = elem.value


def _check_pixel_length(ds: Dataset) -> None:
    if "PixelData" not in ds:
        return
    tsyntax = getattr(ds.file_meta, "TransferSyntaxUID", ExplicitVRLittleEndian)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise MissingPixelData(
            f"Image Pixel module incomplete (Rows, Columns, BitsAllocated): {exc}"
        ) from exc
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise MissingPixelData(f"image geometry {rows}x{cols}x{frames} is empty")
    if UID(tsyntax).is_compressed:
        return
    expected = rows * cols * spp * frames * bits // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise MalformedDicom(
            f"Pixel Data holds {actual} bytes but {rows}x{cols}x{frames} frames of "
            f"{bits}-bit samples need {expected}: the instance is truncated"
        )


def _with_file_meta(ds: Dataset) -> bytes:
    """Encode a bare data set as a Part 10 file (the data set itself is not changed)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    implicit, little = getattr(ds, "original_encoding", (False, True))
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (ValueError, TypeError, OverflowError, struct.error) as exc:
        raise MalformedDicom(f"the data set cannot be stored as a DICOM file: {exc}") from exc
    return buf.getvalue()
