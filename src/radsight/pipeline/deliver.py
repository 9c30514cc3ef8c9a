"""The body of a delivery job: C-STORE one result's objects (SR, SCs, ...) to one destination."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from radsight.delivery.cstore import ClientTls, Target, send_files
from radsight.errors import DestinationDisabled, NotAdmitted, NotFound
from radsight.runtime import Runtime
from radsight.store import Session
from radsight.store import admission as admissionstore
from radsight.store import results as resultstore
from radsight.store.scope import Scope
from radsight.store.tables import DestinationRow, JobRow, ResultObjectRow, ResultRow

log = logging.getLogger(__name__)


def objects_for(dest: DestinationRow, objects: Sequence[ResultObjectRow]) -> list[ResultObjectRow]:
    """The objects of a result that ``dest`` receives, in the result's order.

    Every role today. This is the one place a destination's choice of roles (for
    instance a PACS that takes the SR but not the Secondary Captures) will apply.
    """
    return list(objects)


def _check_admitted(s: Session, result: ResultRow) -> None:
    """Only a current clinical result of a version approved for its organisation *now*,
    of an algorithm the organisation has not switched off, leaves the platform: a version
    suspended or withdrawn (or superseded, or switched off) after the job was queued sends
    nothing.
    """
    state, _ = admissionstore.state_for(
        s, result.algorithm_name, result.algorithm_version, result.organisation_id
    )
    if state != "approved":
        raise NotAdmitted(
            f"{result.algorithm_name} {result.algorithm_version} is {state} for this "
            f"organisation: result {result.id} is not delivered"
        )
    if result.mode != "clinical":
        raise NotAdmitted(
            f"result {result.id} of {result.algorithm_name} {result.algorithm_version} "
            f"is a {result.mode} result: it is not delivered"
        )
    if result.superseded_by_id is not None:
        raise NotAdmitted(
            f"result {result.id} was superseded by result {result.superseded_by_id}: "
            "it is not delivered"
        )
    if result.algorithm_name in admissionstore.switched_off(s, result.organisation_id):
        raise NotAdmitted(
            f"{result.algorithm_name} is switched off for this organisation: "
            f"result {result.id} is not delivered"
        )


def run_delivery(rt: Runtime, job: JobRow) -> int:
    with rt.db.session() as s:
        if job.result_id is None or job.destination_id is None:
            raise NotFound(f"delivery job {job.id} names no result or destination")
        result = resultstore.get_result(s, job.result_id, scope=Scope.ALL)
        if int(job.payload.get("revision", 0)) != result.revision:
            # a re-analysis replaced the result: its own job sends the new revision
            log.info(
                "delivery job %d: result %d is at revision %d, not %s: nothing to send",
                job.id,
                result.id,
                result.revision,
                job.payload.get("revision", 0),
            )
            return 0
        _check_admitted(s, result)
        dest = s.get(DestinationRow, job.destination_id)
        if dest is None:
            raise NotFound(f"destination {job.destination_id} no longer exists")
        if not dest.enabled:
            raise DestinationDisabled(
                f"destination {dest.name!r} is disabled; enable it and retry job {job.id}"
            )
        target = Target(
            dest.ae_title,
            dest.host,
            dest.port,
            tls_server_name=(dest.tls_server_name or dest.host) if dest.tls else None,
            name=dest.name,
        )
        keys = [o.storage_key for o in objects_for(dest, result.objects)]
    files = [rt.files.get(k) for k in keys]
    return send_files(
        target,
        files,
        calling_ae_title=rt.settings.ae_title,
        timeout_s=rt.settings.dimse_timeout_s,
        client_tls=ClientTls(
            rt.settings.dicom_tls_cert, rt.settings.dicom_tls_key, rt.settings.dicom_tls_ca
        ),
    )
