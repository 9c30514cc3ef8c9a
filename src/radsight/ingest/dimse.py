"""The DICOM listener: C-ECHO and C-STORE SCP (pynetdicom).

Handlers stay thin: ``handle_store`` hands the received bytes to
:func:`radsight.ingest.accept.accept_instance` and turns its exception into a DIMSE status
through the one table in :mod:`radsight.ingest.statuses`. Who may associate at all
(registered calling AE titles, their allowed hosts and TLS certificates, the called AE
title, connection limits) is decided before pynetdicom sees the request, in
:mod:`radsight.ingest.callers` and :mod:`radsight.ingest.transport`; refusals are
recorded, aggregated, by :class:`radsight.ingest.refusals.RefusalLog`.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from radsight import tls
from radsight.dicom.instances import storage_sop_classes
from radsight.errors import (
    RadsightError,
    StorageError,
    TooLarge,
    UnknownCaller,
    UnsupportedSopClass,
)
from radsight.ingest.accept import accept_instance, check_instance_size, record_rejection
from radsight.ingest.callers import CallerDirectory
from radsight.ingest.refusals import RefusalLog
from radsight.ingest.statuses import PROCESSING_FAILURE, SUCCESS, status_for
from radsight.ingest.transport import RadsightServer, check_pynetdicom_version
from radsight.runtime import Runtime

log = logging.getLogger(__name__)

#: every transfer syntax we accept; compressed ones are decoded with pylibjpeg when analysed
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
]

#: pynetdicom's own association limit (its default is 10), set out of reach: the lobby
#: counts associations (:func:`radsight.ingest.callers.check_association`)
PYNETDICOM_NO_LIMIT = 1_000_000


class CappedBuffer(io.BytesIO):
    """A C-STORE data set's buffer that keeps at most ``limit`` bytes and counts the rest.

    pynetdicom appends every P-DATA fragment of a message to a ``BytesIO`` until the last
    one arrives; a sender could make it hold gigabytes. This one stops keeping bytes past
    ``max_instance_bytes`` (the association goes on), and ``handle_store`` answers the
    message "Refused: Out of Resources" (0xA700) from ``received`` alone.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.received = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.received += len(data)
        room = self.limit - self.tell()
        if room > 0:
            super().write(bytes(data[:room]))
        return len(data)


def cap_received_data_sets(assoc: Association, limit: int) -> None:
    """Give each DIMSE message received on ``assoc`` a :class:`CappedBuffer`.

    pynetdicom has no setting for this (``STORE_RECV_CHUNKED_DATASET`` spools every data
    set to a temporary file, process-wide, without a limit): the association's DIMSE
    provider creates a message on the first P-DATA of each; we create it first.
    """
    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def receive_capped(primitive: P_DATA) -> None:
        if dimse.message is None:
            dimse.message = DIMSEMessage()
            dimse.message.data_set = CappedBuffer(limit)
        receive(primitive)

    dimse.receive_primitive = receive_capped  # type: ignore[method-assign]


def handle_requested_cap(event: Event, rt: Runtime) -> None:
    """Cap every association's received data sets at ``max_instance_bytes``, before any
    P-DATA can arrive (EVT_REQUESTED comes with the A-ASSOCIATE-RQ)."""
    cap_received_data_sets(event.assoc, rt.settings.max_instance_bytes)


def handle_store(event: Event, rt: Runtime, callers: CallerDirectory) -> int:
    """C-STORE: acknowledge only once the instance is durably stored."""
    calling = event.assoc.requestor.ae_title.strip()
    stats = _stats(event)
    try:
        org_id = callers.organisation_for(calling)
        if org_id is None:
            raise UnknownCaller(f"calling AE title {calling!r} is no longer registered")
        received = getattr(getattr(event.request, "DataSet", None), "received", None)
        if received is not None:
            try:
                check_instance_size(rt, received)
            except TooLarge as exc:
                record_rejection(
                    rt,
                    exc,
                    source="dimse",
                    organisation_id=org_id,
                    ae=calling,
                    dimse_status=status_for(exc.code),
                    sop_instance_uid=str(
                        getattr(event.request, "AffectedSOPInstanceUID", "") or ""
                    ),
                )
                raise
        data = event.encoded_dataset(include_meta=True)
        accept_instance(
            rt,
            data,
            organisation_id=org_id,
            calling_ae_title=calling,
            source="dimse",
            negotiated_sop_class_uid=str(event.context.abstract_syntax),
        )
    except StorageError as exc:
        stats["failed"] += 1
        log.error("C-STORE from %s: %s", calling, exc.message)
        return status_for(exc.code)
    except RadsightError as exc:  # recorded by accept_instance
        stats["failed"] += 1
        return status_for(exc.code)
    except Exception:  # the handler's catch-all: never take the listener down
        stats["failed"] += 1
        log.exception("C-STORE from %s failed unexpectedly", calling)
        return PROCESSING_FAILURE
    stats["stored"] += 1
    return SUCCESS


def handle_echo(event: Event) -> int:
    return SUCCESS


def handle_accepted(event: Event, rt: Runtime, callers: CallerDirectory) -> None:
    assoc = event.assoc
    _stats(event)
    for cx in assoc.rejected_contexts:
        if not _is_storage_like(str(cx.abstract_syntax)):
            continue  # a PACS's echo may also offer query/retrieve: not a refused instance
        calling = assoc.requestor.ae_title.strip()
        record_rejection(
            rt,
            UnsupportedSopClass(
                f"presentation context for {cx.abstract_syntax} "
                f"({getattr(cx.abstract_syntax, 'name', '')}) was rejected: "
                "not a supported storage SOP class or transfer syntax"
            ),
            source="association",
            organisation_id=callers.organisation_for(calling),
            ae=calling,
        )


def _is_storage_like(uid: str) -> bool:
    """A storage SOP class, or one we do not know (possibly a private storage class)."""
    name = UID(uid).name
    return name == uid or "Storage" in name


def handle_closed(event: Event) -> None:
    stats = getattr(event.assoc, "_radsight_stats", None)
    if stats is None:
        return
    log.info(
        "association from %s@%s: %d stored, %d failed in %.2f s",
        event.assoc.requestor.ae_title.strip(),
        event.assoc.requestor.address,
        stats["stored"],
        stats["failed"],
        time.monotonic() - stats["t0"],
    )


def _stats(event: Event) -> dict:
    """Per-association counters for the one summary line logged when it closes."""
    assoc = event.assoc
    stats = getattr(assoc, "_radsight_stats", None)
    if stats is None:
        stats = {"stored": 0, "failed": 0, "t0": time.monotonic()}
        setattr(assoc, "_radsight_stats", stats)  # noqa: B010 - pynetdicom has no slot for it
    return stats


def build_ae(rt: Runtime) -> AE:
    """pynetdicom's AE, with no admission policy of its own: who may associate (titles,
    hosts, certificates, the called title, limits) is the lobby's one check, made before
    pynetdicom sees the request (``require_calling_aet`` stays empty,
    ``require_called_aet`` off, ``maximum_associations`` out of reach)."""
    settings = rt.settings
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = PYNETDICOM_NO_LIMIT
    # advertised in the A-ASSOCIATE-AC; a PDU declaring more is aborted unread
    ae.maximum_pdu_size = settings.dicom_max_pdu_bytes
    ae.acse_timeout = settings.dicom_handshake_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.dicom_idle_timeout_s
    ae.add_supported_context(Verification)
    for uid in sorted(storage_sop_classes()):
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


def start_listener(
    rt: Runtime, callers: CallerDirectory | None = None
) -> tuple[AE, RadsightServer]:
    """Start the C-STORE/C-ECHO SCP in background threads; return (ae, server)."""
    check_pynetdicom_version()
    settings = rt.settings
    callers = callers or CallerDirectory(rt)
    ae = build_ae(rt)
    handlers: list[tuple[object, Callable, list] | tuple[object, Callable]] = [
        (evt.EVT_C_STORE, handle_store, [rt, callers]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_REQUESTED, handle_requested_cap, [rt]),
        (evt.EVT_ACCEPTED, handle_accepted, [rt, callers]),
        (evt.EVT_RELEASED, handle_closed),
        (evt.EVT_ABORTED, handle_closed),
    ]
    ssl_context = (
        tls.server_context(settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_ca)
        if settings.dicom_tls_cert is not None and settings.dicom_tls_key is not None
        else None
    )

    refusals = RefusalLog(rt)

    server = ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        ssl_context=ssl_context,
        evt_handlers=handlers,  # type: ignore[arg-type]
        server_class=RadsightServer,
        settings=settings,
        directory=callers,
        refusals=refusals,
    )
    assert isinstance(server, RadsightServer)
    thread = threading.Thread(
        target=server.serve_forever, name="radsight-dicom-accept", daemon=True
    )
    thread.start()
    log.info(
        "DICOM listener %s on %s:%d (%s)",
        settings.ae_title,
        settings.dicom_host,
        server.server_address[1],
        "TLS" + (", client certificates required" if settings.dicom_tls_ca else "")
        if ssl_context
        else "plain TCP",
    )
    return ae, server
