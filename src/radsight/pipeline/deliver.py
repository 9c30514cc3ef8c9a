"""The body of a delivery job: C-STORE one result's SR and SC to one destination."""

from __future__ import annotations

from radsight.delivery.cstore import Target, send_files
from radsight.errors import DestinationDisabled, NotFound
from radsight.runtime import Runtime
from radsight.store import results as resultstore
from radsight.store.scope import Scope
from radsight.store.tables import DestinationRow, JobRow


def run_delivery(rt: Runtime, job: JobRow) -> int:
    with rt.db.session() as s:
        if job.result_id is None or job.destination_id is None:
            raise NotFound(f"delivery job {job.id} names no result or destination")
        result = resultstore.get_result(s, job.result_id, scope=Scope.ALL)
        dest = s.get(DestinationRow, job.destination_id)
        if dest is None:
            raise NotFound(f"destination {job.destination_id} no longer exists")
        if not dest.enabled:
            raise DestinationDisabled(
                f"destination {dest.name!r} is disabled; enable it and retry job {job.id}"
            )
        target = Target(dest.ae_title, dest.host, dest.port)
        keys = list(result.output_keys)
    files = [rt.files.get(k) for k in keys]
    return send_files(
        target,
        files,
        calling_ae_title=rt.settings.ae_title,
        timeout_s=rt.settings.dimse_timeout_s,
    )
