"""A STOW-RS body is spooled to disk, not held in memory, and its file never outlives the
request (issue 16).

Before, a STOW-RS body was held in memory up to ``max_request_bytes`` (4 GiB): a few
concurrent uploads could exhaust the server's memory. Against a real ``radsight serve``,
capped in address space so that a failure cannot take the machine down.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.statuses import OUT_OF_RESOURCES
from radsight.testing.peers import RadsightProcess, rss_mb

BOUNDARY = "radsight-spool-boundary"
STOW = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RadsightProcess, str]]:
    work = tmp_path_factory.mktemp("spool")
    server = RadsightProcess(
        work / "radsight",
        workers=1,
        memory_limit_mb=2048,
        env={"RADSIGHT_MAX_INSTANCE_BYTES": str(64 * MiB)},
    )
    server.cli("org", "add", "Spool Hospital", "--region", "North")
    server.start()
    token = server.make_token("org_admin", "--org", "Spool Hospital", name="spool")
    try:
        yield server, token
    finally:
        server.stop()


def spool_files(server: RadsightProcess) -> list[str]:
    """Files the server process holds open in <data_dir>/spool (unnamed: '#123 (deleted)')."""
    assert server.proc is not None
    spool = str(server.data_dir.resolve() / "spool")
    out = []
    for fd in os.listdir(f"/proc/{server.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{server.proc.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(spool):
            out.append(target)
    return out


def part10() -> bytes:
    buf = io.BytesIO()
    make_radiograph(rows=64, columns=64).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_a_300_mb_body_is_not_held_in_memory(server):
    srv, token = server
    assert srv.proc is not None
    valid = part10()
    big = 100 * MiB  # each over max_instance_bytes (64 MiB): refused without being read

    def body() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + valid
        block = b"\x5a" * MiB
        for _ in range(3):
            yield f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for _ in range(big // MiB):
                yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    baseline = rss_mb(srv.proc.pid)
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(srv.proc.pid))  # type: ignore[union-attr]

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            r = c.post(
                "/dicomweb/studies",
                content=body(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": STOW,
                    "Accept": "application/dicom+json",
                },
            )
    finally:
        done.set()
        watcher.join(2)
    seconds = time.monotonic() - t0
    assert r.status_code == 202, r.text
    answer = r.json()
    assert len(answer["00081199"]["Value"]) == 1
    reasons = [i["00081197"]["Value"][0] for i in answer["00081198"]["Value"]]
    assert reasons == [OUT_OF_RESOURCES] * 3
    grew = peak[0] - baseline
    print(f"\n300 MiB body in {seconds:.1f} s: resident {baseline:.0f} -> {peak[0]:.0f} MiB")
    assert grew < 100, f"the server grew {grew:.0f} MiB receiving a 300 MiB body"
    assert spool_files(srv) == []


def test_the_spool_file_is_removed_when_the_client_disconnects(server):
    srv, token = server
    head = (
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {STOW}\r\n"
        f"Content-Length: {50 * MiB}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(head + f"--{BOUNDARY}\r\n\r\n".encode())
        for _ in range(8):
            s.sendall(bytes(MiB))
        deadline = time.monotonic() + 10
        while not spool_files(srv) and time.monotonic() < deadline:
            time.sleep(0.1)
        # mid-body, the body is in a file (more than stow_spool_memory_bytes, 1 MiB)
        (held,) = spool_files(srv)
        assert "(deleted)" in held, "an unnamed file: nothing is left on disk if we crash"
    # the client went away with 42 MiB unsent
    deadline = time.monotonic() + 10
    while spool_files(srv) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spool_files(srv) == []
    assert list(Path(srv.data_dir / "spool").iterdir()) == []
    assert srv.proc is not None and srv.proc.poll() is None
