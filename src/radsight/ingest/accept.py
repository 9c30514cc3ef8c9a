"""The one function every entry point ends in: accept an instance, durably.

C-STORE (``ingest.dimse``), folder/zip import (``ingest.importer``) and later STOW-RS and
the HTTPS upload all call :func:`accept_instance`. It returns only after the file is
fsynced and the row committed, which is when the sender may be told "success".
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from radsight.dicom.codestream import check_pixel_data
from radsight.dicom.instances import ParsedInstance, parse_part10
from radsight.dicom.study_types import classify_study_type
from radsight.errors import (
    DuplicateInstance,
    InstanceRejected,
    RadsightError,
    StorageError,
    TooLarge,
)
from radsight.ingest.statuses import status_for
from radsight.redact import redact_values
from radsight.runtime import Runtime
from radsight.store import studies
from radsight.store.files import safe_component
from radsight.store.tables import InstanceRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    sop_instance_uid: str
    study_instance_uid: str
    study_id: int
    #: False when the same instance had been accepted before (idempotent re-send)
    new: bool


def accept_instance(
    rt: Runtime,
    data: bytes | ParsedInstance,
    *,
    organisation_id: int,
    calling_ae_title: str = "",
    source: str = "dimse",
    negotiated_sop_class_uid: str | None = None,
) -> Accepted:
    """Check, store and index one instance; raise and record an InstanceRejected on bad input."""
    t0 = time.perf_counter()
    parsed: ParsedInstance | None = None

    def refused(exc: RadsightError) -> None:
        record_rejection(
            rt,
            exc,
            source=source,
            organisation_id=organisation_id,
            ae=calling_ae_title,
            dimse_status=status_for(exc.code) if source == "dimse" else None,
            sop_instance_uid=parsed.sop_instance_uid if parsed is not None else "",
        )

    try:
        check_instance_size(rt, len(data.part10 if isinstance(data, ParsedInstance) else data))
        parsed = (
            data
            if isinstance(data, ParsedInstance)
            else parse_part10(
                data,
                negotiated_sop_class_uid,
                max_sequence_depth=rt.settings.max_sequence_depth,
                max_inflated_bytes=rt.settings.max_instance_bytes,
            )
        )
        # what the compressed frames declare must be what the header says: a decompression
        # bomb is refused here, before it is stored (radsight.dicom.codestream)
        check_pixel_data(
            parsed.dataset,
            max_frame_pixels=rt.settings.max_frame_pixels,
            max_instance_pixels=rt.settings.max_instance_pixels,
        )
    except InstanceRejected as exc:
        refused(exc)
        raise
    with rt.db.session() as s:
        earlier = studies.get_instance(s, organisation_id, parsed.sop_instance_uid)
    if earlier is not None:
        try:
            ensure_same_content(rt, earlier, parsed)
        except DuplicateInstance as exc:
            refused(exc)
            raise
        return Accepted(parsed.sop_instance_uid, parsed.study_instance_uid, earlier.study_id, False)
    key = "/".join(
        (
            "instances",
            str(organisation_id),
            safe_component(parsed.study_instance_uid),
            safe_component(parsed.series_instance_uid),
            safe_component(parsed.sop_instance_uid) + ".dcm",
        )
    )
    try:
        sha = rt.files.put(key, parsed.part10)
    except StorageError as exc:  # e.g. the object store is down: refused, and recorded
        refused(exc)
        raise
    study_type = classify_study_type(parsed.attributes, parsed.sop_class_uid)
    quiet = rt.settings.quiet_period(study_type)
    with rt.db.session() as s:
        study_id, new = studies.add_instance(
            s,
            organisation_id=organisation_id,
            parsed=parsed,
            storage_key=key,
            size=len(parsed.part10),
            sha256=sha,
            study_type=study_type,
            quiet_period_s=quiet,
            calling_ae_title=calling_ae_title,
        )
    log.debug(
        "stored instance %s of study %s in %.1f ms",
        parsed.sop_instance_uid,
        parsed.study_instance_uid,
        (time.perf_counter() - t0) * 1000,
    )
    return Accepted(parsed.sop_instance_uid, parsed.study_instance_uid, study_id, new)


def check_instance_size(rt: Runtime, size: int) -> None:
    """Refuse an instance over ``max_instance_bytes`` (every entry point, before parsing)."""
    limit = rt.settings.max_instance_bytes
    if size > limit:
        raise TooLarge(
            f"the instance is {size} bytes, more than max_instance_bytes ({limit} bytes)"
        )


#: attributes a modality may change when it sends the same image in another transfer
#: syntax (PS3.5 8, PS3.3 C.7.6.1.1.5): left out when the transfer syntaxes differ
_RE_ENCODED = frozenset(
    (
        0x7FE00010,  # Pixel Data
        0x7FE00008,  # Float Pixel Data
        0x7FE00009,  # Double Float Pixel Data
        0x00280004,  # Photometric Interpretation (YBR_FULL_422 for JPEG baseline)
        0x00282110,  # Lossy Image Compression
        0x00282112,  # Lossy Image Compression Ratio
        0x00282114,  # Lossy Image Compression Method
        0x00280006,  # Planar Configuration
    )
)


def ensure_same_content(rt: Runtime, earlier: InstanceRow, parsed: ParsedInstance) -> None:
    """A re-send is the same instance, or :class:`DuplicateInstance` is raised.

    The same instance is: the same Part 10 bytes (SHA-256); else the same data set
    apart from the file meta (another sender's meta, same transfer syntax); else, in
    another transfer syntax, the same data set apart from the pixel data and the
    attributes re-encoding changes (:data:`_RE_ENCODED`). Pixels in different transfer
    syntaxes are not decoded to be compared: decoding is what a bomb exploits.
    """
    received = hashlib.sha256(parsed.part10).hexdigest()
    if received == earlier.sha256:
        return
    try:
        stored = pydicom.dcmread(io.BytesIO(rt.files.get(earlier.storage_key)))
    except StorageError:
        raise
    except Exception as exc:  # what we stored no longer reads: the re-send is not the same
        # pydicom's message may quote an element value (a patient's name): redacted
        log.error(
            "stored instance %s does not read back: %s: %s",
            earlier.sop_instance_uid,
            type(exc).__name__,
            redact_values(str(exc)),
        )
        stored = None
    if stored is not None:
        if earlier.transfer_syntax_uid == parsed.transfer_syntax_uid:
            if _elements(stored) == _elements(parsed.dataset):
                return
        elif _elements(stored, _RE_ENCODED) == _elements(parsed.dataset, _RE_ENCODED):
            return
    raise DuplicateInstance(
        f"SOP Instance UID {parsed.sop_instance_uid} was accepted before with other "
        f"content (stored sha256 {earlier.sha256[:12]}, received sha256 {received[:12]}): "
        "a different instance needs its own SOP Instance UID"
    )


def _elements(ds: Dataset, leave_out: frozenset[int] = frozenset()) -> dict[int, object]:
    return {int(tag): ds[tag].value for tag in ds.keys() if int(tag) not in leave_out}


def record_rejection(
    rt: Runtime,
    exc: RadsightError,
    *,
    source: str,
    organisation_id: int | None,
    ae: str = "",
    dimse_status: int | None = None,
    sop_instance_uid: str = "",
) -> None:
    """Keep a record of refused input; never let the record itself take a handler down."""
    # the message may carry a parser's words about an element value: redacted in the log
    log.warning(
        "rejected %s input from %r: %s: %s", source, ae, exc.code, redact_values(exc.message)
    )
    try:
        with rt.db.session() as s:
            studies.create_rejection(
                s,
                organisation_id=organisation_id,
                source=source,
                calling_ae_title=ae,
                error_code=exc.code,
                message=exc.message,
                dimse_status=dimse_status,
                sop_instance_uid=sop_instance_uid,
            )
    except Exception:  # the rejection is already logged; the sender still gets its status
        log.exception("could not record a rejection")
