"""Sending results to a destination with C-STORE (the only place delivery talks DIMSE)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SecondaryCaptureImageStorage,
)

from radsight.dicom.stored import read_stored
from radsight.errors import DeliveryError

log = logging.getLogger(__name__)

_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


@dataclass(frozen=True)
class Target:
    ae_title: str
    host: str
    port: int


def send_files(
    target: Target, files: list[bytes], *, calling_ae_title: str, timeout_s: float = 30.0
) -> int:
    """C-STORE every file in one association; raise DeliveryError unless all succeed."""
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    datasets = [read_stored(b, f"{n} of the result") for n, b in enumerate(files, 1)]
    classes = {str(ds.SOPClassUID) for ds in datasets}
    for uid in classes | {Comprehensive3DSRStorage, SecondaryCaptureImageStorage}:
        ae.add_requested_context(uid, _TRANSFER_SYNTAXES)
    t0 = time.perf_counter()
    try:
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
    except Exception as exc:  # socket errors surface here on some platforms
        raise DeliveryError(
            f"cannot reach {target.ae_title}@{target.host}:{target.port}: {exc}"
        ) from exc
    if not assoc.is_established:
        raise DeliveryError(
            f"association with {target.ae_title}@{target.host}:{target.port} "
            f"was {'rejected' if assoc.is_rejected else 'not established'}"
        )
    sent = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise DeliveryError(
                    f"no response from {target.ae_title} for {ds.SOPInstanceUID} "
                    "(timeout or aborted association)"
                )
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise DeliveryError(
                    f"{target.ae_title} refused {ds.SOPInstanceUID} with status 0x{code:04X}"
                )
            sent += 1
    finally:
        if assoc.is_established:
            assoc.release()
    log.info(
        "delivered %d objects to %s@%s:%d in %.2f s",
        sent,
        target.ae_title,
        target.host,
        target.port,
        time.perf_counter() - t0,
    )
    return sent
