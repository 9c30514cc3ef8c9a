"""An in-process DICOM listener on SQLite and the raw-socket peers the listener tests use."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from radsight.config import load_settings
from radsight.ingest.callers import CallerDirectory
from radsight.ingest.dimse import start_listener
from radsight.ingest.refusals import FLUSH_S
from radsight.runtime import Runtime
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope
from radsight.testing.peers import dcmtk


class Listener:
    def __init__(self, rt: Runtime, server: Any) -> None:
        self.rt = rt
        self.server = server
        self.port = int(server.server_address[1])

    def register(self, ae_title: str, **fields: Any) -> None:
        with self.rt.db.session() as s:
            orgs = tenants.list_organisations(s, scope=Scope.ALL)
            org = orgs[0][0].id if orgs else tenants.create_organisation(s, "Clinic", "N").id
            tenants.create_application_entity(s, org, ae_title, **fields)

    def rejections(self) -> list:
        time.sleep(FLUSH_S * 2 + 0.1)  # refusals are written in batches
        with self.rt.db.session() as s:
            rows = studystore.list_rejections(s, scope=Scope.ALL, limit=1000)
            s.expunge_all()
            return rows


@contextmanager
def running_listener(tmp_path: Path, **settings: Any) -> Iterator[Listener]:
    cfg = load_settings(
        None,
        data_dir=tmp_path / "data",
        dicom_port=0,
        **settings,
    )
    rt = Runtime.open(cfg)
    _ae, server = start_listener(rt, CallerDirectory(rt, ttl_s=0))
    try:
        yield Listener(rt, server)
    finally:
        server.shutdown()
        rt.close()


def echoscu(
    port: int, calling: str, called: str = "RADSIGHT", *tls: str, timeout: float = 15
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            dcmtk("echoscu"),
            "-to",
            "5",
            "-ta",
            "5",
            "-aet",
            calling,
            "-aec",
            called,
            *tls,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def recorded_request(calling: str = "MODALITY", called: str = "RADSIGHT") -> bytes:
    """The A-ASSOCIATE-RQ dcmtk's echoscu sends, caught by a bare socket."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        proc = subprocess.Popen(
            [dcmtk("echoscu"), "-to", "2", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        srv.settimeout(10)
        conn, _ = srv.accept()
        conn.settimeout(10)
        data = b""
        while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.close()
        proc.kill()
        proc.wait(10)
    return data


def read_answer(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the listener sends until it closes (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def thread_count() -> int:
    return threading.active_count()


def with_calling_ae_title(request: bytes, calling: str) -> bytes:
    """``request`` (an A-ASSOCIATE-RQ) with another calling AE title (PS3.8 9.3.2:
    bytes 26-41)."""
    return request[:26] + calling.encode().ljust(16)[:16] + request[42:]


def echo_seconds(port: int, calling: str, called: str = "RADSIGHT") -> float:
    """How long a C-ECHO takes, association and release included, measured in-process
    (no program start-up in the figure); raises when it does not succeed."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    try:
        if not assoc.is_established:
            raise AssertionError(f"association from {calling} not established")
        status = assoc.send_c_echo()
        if getattr(status, "Status", None) != 0:
            raise AssertionError(f"C-ECHO from {calling}: {status}")
    finally:
        if assoc.is_established:
            assoc.release()
    return time.monotonic() - t0
