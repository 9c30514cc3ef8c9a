"""Sending results to a destination with C-STORE (the only place delivery talks DIMSE).

A destination marked for TLS is reached over DICOM TLS only (the context of
:func:`radsight.tls.client_context`); a TLS failure is a :class:`DeliveryError` with the
reason, never a retry over plain TCP.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SecondaryCaptureImageStorage,
)

from radsight import tls
from radsight.dicom.stored import read_stored
from radsight.errors import DeliveryError

log = logging.getLogger(__name__)

_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


@dataclass(frozen=True)
class Target:
    ae_title: str
    host: str
    port: int
    #: over DICOM TLS, the name the peer's certificate must carry; None: plain TCP
    tls_server_name: str | None = None
    #: the destination's name in Radsight (for messages)
    name: str = ""

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ClientTls:
    """Radsight's side of a TLS delivery: its certificate and key (presented when a PACS
    asks; None: none) and the CA file PACS certificates must chain to (None: the system's
    trust store)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


def _recording_socket(errors: list[OSError]) -> type[ssl.SSLSocket]:
    """An SSLSocket class that keeps what failed in the handshake or after it: pynetdicom
    logs it and reports only "not established", and the operator needs the reason. (A
    refused TCP connection is not recorded: it reads as any unreachable destination.)"""

    class RecordingSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except OSError as exc:
                errors.append(exc)
                raise

        def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
            try:
                return super().recv(buflen, flags)
            except ssl.SSLError as exc:  # e.g. the peer's alert after a TLS 1.3 handshake
                errors.append(exc)
                raise

    return RecordingSSLSocket


def tls_reason(exc: OSError) -> str:
    """What went wrong in words: "certificate verify failed: ..." or the handshake alert."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {str(exc.verify_message).rstrip('.')}"
    if isinstance(exc, ssl.SSLError):
        text = re.sub(r"^\[SSL: [A-Z0-9_]+\] | \(_ssl\.c:\d+\)$", "", str(exc))
        return f"TLS handshake failed: {exc.reason or text} ({text})"
    return (
        f"TLS handshake failed: the peer closed the connection ({exc}): "
        "is it listening for DICOM TLS on this port"
    )


def send_files(
    target: Target,
    files: list[bytes],
    *,
    calling_ae_title: str,
    timeout_s: float = 30.0,
    client_tls: ClientTls | None = None,
) -> int:
    """C-STORE every file in one association; raise DeliveryError unless all succeed."""
    tls_args = None
    tls_errors: list[OSError] = []
    if target.tls_server_name is not None:
        own = client_tls or ClientTls()
        context = tls.client_context(
            own.cert, own.key, own.ca, sslsocket_class=_recording_socket(tls_errors)
        )
        tls_args = (context, target.tls_server_name)
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
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title, tls_args=tls_args)
    except Exception as exc:  # socket errors surface here on some platforms
        raise DeliveryError(f"cannot reach {target}: {exc}") from exc
    if not assoc.is_established:
        if tls_errors:
            raise DeliveryError(
                f"TLS with destination {target.name!r} ({target}, verified as "
                f"{target.tls_server_name!r}) failed: {tls_reason(tls_errors[0])}; "
                "nothing was sent"
            )
        raise DeliveryError(
            f"association with {target} "
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
        "delivered %d objects to %s%s in %.2f s",
        sent,
        target,
        " over TLS" if tls_args else "",
        time.perf_counter() - t0,
    )
    return sent
