"""The DICOM JSON model (PS3.18 Annex F.2) and QIDO-RS query parameters (PS3.18 8.3.4).

Pure: pydicom only. The HTTP routes (``radsight.api.routes.dicomweb``) parse a query with
:func:`parse_qido`, the store turns the :class:`QidoQuery` into SQL, and the rows come back
as DICOM JSON through :func:`to_dicom_json`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from radsight.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = [
    "LEVEL_ATTRIBUTES",
    "Match",
    "QidoQuery",
    "dataset_to_json",
    "parse_qido",
    "tag_hex",
    "to_dicom_json",
]

#: what each query level can match on (keyword -> how), PS3.18 Table 10.6.1-5
MATCHABLE: dict[str, dict[str, str]] = {
    "study": {
        "StudyInstanceUID": "uid",
        "PatientName": "name",
        "PatientID": "text",
        "StudyDate": "date",
        "AccessionNumber": "text",
        "ModalitiesInStudy": "modality",
        "StudyDescription": "text",
        "StudyID": "text",
        "ReferringPhysicianName": "name",
    },
    "series": {
        "SeriesInstanceUID": "uid",
        "Modality": "text",
        "SeriesNumber": "int",
        "SeriesDescription": "text",
        "BodyPartExamined": "text",
    },
    "instance": {
        "SOPInstanceUID": "uid",
        "SOPClassUID": "uid",
        "InstanceNumber": "int",
    },
}

#: the attributes returned at each level (PS3.18 Table 10.6.3-3 to -5), in order
LEVEL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "study": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "RetrieveURL",
    ),
    "instance": (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "RetrieveURL",
    ),
}

#: returned only when asked for with includefield (or includefield=all)
OPTIONAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "study": ("StudyDescription",),
    "series": ("SeriesDescription", "BodyPartExamined"),
    "instance": ("TransferSyntaxUID",),
}

_CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "orderby"}
_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class Match:
    """One matching key: ``kind`` says how ``values`` match (PS3.4 C.2.2.2)."""

    keyword: str
    #: uid (list of UIDs) | exact | wildcard (* and ?) | range (dates, either end open)
    #: | words (fuzzy person name: each word starts a name component)
    kind: str
    values: tuple[str, ...]


@dataclass
class QidoQuery:
    level: str
    matches: list[Match] = field(default_factory=list)
    limit: int = 100
    offset: int = 0
    fuzzy: bool = False
    #: extra attributes to return; ``all`` returns every one this server indexes
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    #: keys this server does not match on (ignored, reported in a Warning header)
    unsupported: list[str] = field(default_factory=list)

    def attributes(self, levels: Iterable[str]) -> list[str]:
        """What to return for rows of these levels (the query level's own come last)."""
        out: list[str] = []
        for level in levels:
            out += LEVEL_ATTRIBUTES[level]
            extra = OPTIONAL_ATTRIBUTES[level]
            out += [kw for kw in extra if self.include_all or kw in self.include]
        return list(dict.fromkeys(out))


def _keyword(key: str) -> str:
    """A query key by keyword (``PatientName``) or tag (``00100010``) as a keyword."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        return keyword_for_tag(int(key, 16)) or key.upper()
    return key


#: the longest single value a QIDO-RS key may match: a PN of three component groups of
#: five 64-character components fits (PS3.5 6.2); longer is no DICOM value
MAX_QUERY_VALUE_CHARS = 1024


def parse_qido(
    params: Iterable[tuple[str, str]],
    level: str,
    max_limit: int = 1000,
    max_values: int = 100,
) -> QidoQuery:
    """Read QIDO-RS query parameters (PS3.18 8.3.4) for a ``study|series|instance`` search.

    ``params`` are the query's (key, value) pairs in order; a key may repeat. Keys of
    the levels above ``level`` match too (``/series?PatientID=...``). A list of values
    (``StudyInstanceUID=a,b``, PS3.18 8.3.4.1) may hold at most ``max_values``, and one
    value at most :data:`MAX_QUERY_VALUE_CHARS` characters. Raises
    :class:`~radsight.errors.InvalidInput` with a message for the caller on a malformed value.
    """
    levels = {"study": ["study"], "series": ["study", "series"]}.get(
        level, ["study", "series", "instance"]
    )
    matchable: dict[str, str] = {}
    for lv in levels:
        matchable.update(MATCHABLE[lv])
    q = QidoQuery(level=level)
    raw: dict[str, str] = {}
    for key, value in params:
        name = key.strip()
        if name == "limit":
            q.limit = _int_param(name, value, 1, max_limit)
        elif name == "offset":
            q.offset = _int_param(name, value, 0, 10**9)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidInput(f"fuzzymatching must be true or false, not {value!r}")
            q.fuzzy = value.lower() == "true"
        elif name == "includefield":
            for item in re.split(r"[,\s]+", value.strip()):
                if item == "all":
                    q.include_all = True
                elif item:
                    q.include.add(_keyword(item))
        elif name in _CONTROL:
            q.unsupported.append(name)
        else:
            _check_size(name, value, max_values)
            raw[_keyword(name)] = value
    for keyword, value in raw.items():
        how = matchable.get(keyword)
        if how is None:
            q.unsupported.append(keyword)
            continue
        match = _match(keyword, how, value, q.fuzzy)
        if match is not None:
            q.matches.append(match)
    return q


def _check_size(name: str, value: str, max_values: int) -> None:
    """A list of at most ``max_values`` values, none longer than MAX_QUERY_VALUE_CHARS."""
    items = re.split(r"[,\\]", value)
    if len(items) > max_values:
        raise InvalidInput(
            f"{name} lists {len(items)} values; a query may list at most {max_values} "
            "(max_query_values)"
        )
    longest = max(len(v) for v in items)
    if longest > MAX_QUERY_VALUE_CHARS:
        raise InvalidInput(
            f"a value of {name} is {longest} characters; a query value may have at most "
            f"{MAX_QUERY_VALUE_CHARS} characters"
        )


def _int_param(name: str, value: str, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {value!r}") from None
    if not lo <= number <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, not {number}")
    return number


def _match(keyword: str, how: str, value: str, fuzzy: bool) -> Match | None:
    value = value.strip()
    if value in ("", "*"):  # universal matching: every row
        return None
    if how == "uid":
        uids = tuple(v.strip() for v in re.split(r"[,\\]", value) if v.strip())
        for uid in uids:
            if not re.fullmatch(r"[0-9.]{1,64}", uid):
                raise InvalidInput(f"{keyword} {uid[:70]!r} is not a UID")
        return Match(keyword, "uid", uids)
    if how == "date":
        return Match(keyword, "range", _date_range(keyword, value))
    if how == "modality":
        return Match(keyword, "uid", tuple(v for v in re.split(r"[,\\]", value) if v))
    if how == "int":
        try:
            return Match(keyword, "exact", (str(int(value)),))
        except ValueError:
            raise InvalidInput(f"{keyword} must be an integer, not {value!r}") from None
    if how == "name":
        text = " ".join(value.split("=")[0].replace("^", " ").replace(",", " ").upper().split())
        if "*" in text or "?" in text:
            return Match(keyword, "wildcard", (text,))
        if fuzzy:
            return Match(keyword, "words", tuple(text.split()))
        return Match(keyword, "exact", (text,))
    if "*" in value or "?" in value:
        return Match(keyword, "wildcard", (value,))
    return Match(keyword, "exact", (value,))


def _date_range(keyword: str, value: str) -> tuple[str, str]:
    """``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, ``-YYYYMMDD`` or ``YYYYMMDD-`` (PS3.4 C.2.2.2.5)."""
    lo, dash, hi = value.partition("-")
    if not dash:
        hi = lo
    for part in (lo, hi):
        if part and not _DATE.match(part):
            raise InvalidInput(
                f"{keyword} {value!r} is not a date or date range (YYYYMMDD-YYYYMMDD)"
            )
    if lo and hi and lo > hi:
        raise InvalidInput(f"{keyword} range {value!r} ends before it starts")
    return lo, hi


# --- the JSON model ----------------------------------------------------------------------


@lru_cache(maxsize=4096)
def tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    return f"{tag:08X}"


@lru_cache(maxsize=4096)
def _vr(keyword: str) -> str:
    vr = dictionary_VR(int(tag_hex(keyword), 16))
    return vr.split(" or ")[0]


def to_dicom_json(values: Mapping[str, Any], keywords: Iterable[str]) -> dict[str, Any]:
    """A DICOM JSON object (PS3.18 F.2) of ``keywords`` taken from ``values``.

    A keyword missing from ``values`` or with an empty value is given with its VR and
    no ``Value`` (an empty attribute, F.2.5). Person names become ``{"Alphabetic": ...}``
    (F.2.2), IS/DS/US/UL numbers, multi-valued strings split on backslashes.
    """
    out: dict[str, Any] = {}
    for keyword in keywords:
        vr = _vr(keyword)
        element: dict[str, Any] = {"vr": vr}
        value = values.get(keyword)
        if value is not None and value != "" and value != []:
            items = value if isinstance(value, list | tuple) else [value]
            if vr == "PN":
                element["Value"] = [{"Alphabetic": str(v)} for v in items]
            elif vr in ("IS", "US", "UL", "SL", "SS", "UV", "SV"):
                element["Value"] = [int(v) for v in items]
            elif vr in ("DS", "FL", "FD"):
                element["Value"] = [float(v) for v in items]
            elif vr in ("CS",) and isinstance(value, str) and "\\" in value:
                element["Value"] = [v for v in value.split("\\") if v]
            else:
                element["Value"] = [str(v) for v in items]
        out[tag_hex(keyword)] = element
    return out


def _encodable_elements(
    ds: pydicom.Dataset, threshold: int, handler: Callable[[DataElement], str]
) -> dict[str, Any]:
    """DICOM JSON of the elements pydicom can encode; the others are left out and logged
    by tag (an empty Person Name component group, an IS of letters, bytes no character
    set decodes): the rest of the metadata still reaches the viewer."""
    body: dict[str, Any] = {}
    left_out = []
    for tag in ds.keys():
        try:
            body[f"{tag:08X}"] = ds[tag].to_json_dict(
                bulk_data_element_handler=handler, bulk_data_threshold=threshold
            )
        except Exception as exc:  # pydicom raises many kinds on odd values
            left_out.append(f"({tag:08X}) {type(exc).__name__}")
    log.warning("DICOM JSON left out elements it cannot encode: %s", ", ".join(left_out))
    return body


def dataset_to_json(
    ds: pydicom.Dataset, bulk_data_uri: Callable[[str], str], threshold: int = 1024
) -> dict[str, Any]:
    """A stored instance as DICOM JSON metadata (PS3.18 F.2), bulk data by reference.

    Pixel Data and any binary value longer than ``threshold`` bytes is replaced by a
    ``BulkDataURI`` (F.2.6) that ``bulk_data_uri(tag)`` gives for its 8-hex-digit tag.
    """

    def handler(elem: DataElement) -> str:
        return bulk_data_uri(f"{elem.tag:08X}")

    try:
        body = ds.to_json_dict(bulk_data_threshold=threshold, bulk_data_element_handler=handler)
    except Exception:  # a value ingest let through that pydicom cannot encode (issue 16)
        body = _encodable_elements(ds, threshold, handler)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            key = tag_hex(keyword)
            vr = body.get(key, {}).get("vr", "OW")
            body[key] = {"vr": vr, "BulkDataURI": bulk_data_uri(key)}
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        body["00020010"] = {"vr": "UI", "Value": [str(meta.TransferSyntaxUID)]}
    return body
