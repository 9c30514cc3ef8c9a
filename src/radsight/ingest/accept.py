"""The one function every entry point ends in: accept an instance, durably.

C-STORE (``ingest.dimse``), folder/zip import (``ingest.importer``) and later STOW-RS and
the HTTPS upload all call :func:`accept_instance`. It returns only after the file is
fsynced and the row committed, which is when the sender may be told "success".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from radsight.dicom.codestream import check_pixel_data
from radsight.dicom.instances import ParsedInstance, parse_part10
from radsight.dicom.study_types import classify_study_type
from radsight.errors import InstanceRejected, RadsightError, StorageError
from radsight.ingest.statuses import status_for
from radsight.runtime import Runtime
from radsight.store import studies
from radsight.store.files import safe_component

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
    try:
        parsed = (
            data
            if isinstance(data, ParsedInstance)
            else parse_part10(data, negotiated_sop_class_uid)
        )
        # what the compressed frames declare must be what the header says: a decompression
        # bomb is refused here, before it is stored (radsight.dicom.codestream)
        check_pixel_data(parsed.dataset, max_frame_pixels=rt.settings.max_frame_pixels)
    except InstanceRejected as exc:
        record_rejection(
            rt,
            exc,
            source=source,
            organisation_id=organisation_id,
            ae=calling_ae_title,
            dimse_status=status_for(exc.code) if source == "dimse" else None,
            sop_instance_uid=parsed.sop_instance_uid if parsed is not None else "",
        )
        raise
    with rt.db.session() as s:
        if studies.instance_exists(s, organisation_id, parsed.sop_instance_uid):
            study_id = studies.study_id_for_instance(s, organisation_id, parsed.sop_instance_uid)
            return Accepted(parsed.sop_instance_uid, parsed.study_instance_uid, study_id, False)
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
        record_rejection(
            rt,
            exc,
            source=source,
            organisation_id=organisation_id,
            ae=calling_ae_title,
            dimse_status=status_for(exc.code) if source == "dimse" else None,
            sop_instance_uid=parsed.sop_instance_uid,
        )
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
    log.warning("rejected %s input from %r: %s: %s", source, ae, exc.code, exc.message)
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
