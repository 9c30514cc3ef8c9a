"""``radsight serve`` against the endless PDU and slot exhaustion (issue 16, findings 2, 3).

The server runs as a real process with its address space capped (RLIMIT_AS), listening on
127.0.0.1; its resident memory is sampled while the attack runs.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radsight.testing.peers import RadsightProcess, dcmtk, rss_mb
from tests.conftest import require_tool
from tests.ingest.listener_helpers import echo_seconds

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadsightProcess]:
    require_tool("echoscu")
    srv = RadsightProcess(
        tmp_path_factory.mktemp("serve"),
        workers=0,
        memory_limit_mb=1536,
        env={"RADSIGHT_DICOM_HANDSHAKE_TIMEOUT_S": "2"},
    )
    srv.start()
    srv.cli("org", "add", "North Clinic", "--region", "North")
    srv.cli("ae", "add", "North Clinic", "CT1", "--allowed-host", "127.0.0.0/8")
    yield srv
    srv.stop()


def echo(server: RadsightProcess, calling: str = "CT1") -> subprocess.CompletedProcess:
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
            "RADSIGHT",
            "127.0.0.1",
            str(server.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )


def server_threads(server: RadsightProcess) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])


def test_endless_pdu_is_cut_off_and_memory_stays_flat(server):
    assert server.proc is not None
    pid = server.proc.pid
    before = rss_mb(pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent, closed_at = 0, None
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=10) as s:
            s.sendall(b"\x01\x00\xff\xff\xff\xff")  # an A-ASSOCIATE-RQ of 4 GiB
            block = b"\0" * MiB
            try:
                while sent < 300 * MiB and time.monotonic() - t0 < 20:
                    s.sendall(block)
                    sent += MiB
            except OSError:
                closed_at = time.monotonic() - t0
    finally:
        time.sleep(0.3)
        stop.set()
        sampler.join(5)
    assert closed_at is not None, f"the server read all {sent // MiB} MiB"
    # the requirement is "cut off before it costs memory"; closed_at < 15 only says it is
    # cut off at all (with room for a loaded 2-core CI machine)
    assert sent < 32 * MiB and closed_at < 15
    assert peak[0] - before < 50, f"server RSS grew from {before:.0f} to {peak[0]:.0f} MiB"
    assert echo(server).returncode == 0
    out = server.cli("rejections").stdout
    assert "pdu_too_large" in out and "127.0.0.1" in out
    with server.http() as http:
        (row,) = [r for r in http.get("/api/rejections").json() if r["source"] == "association"]
    assert (row["error_code"], row["remote_addr"], row["count"]) == (
        "pdu_too_large",
        "127.0.0.1",
        1,
    )


def test_a_modality_gets_through_while_slots_are_attacked(server):
    echo_seconds(server.dicom_port, "CT1")  # warm-up
    threads_before = server_threads(server)
    held: list[socket.socket] = []
    try:
        for _ in range(100):
            held.append(socket.create_connection(("127.0.0.1", server.dicom_port), timeout=5))
        for _ in range(20):  # a truncated A-ASSOCIATE-RQ (declares 512 bytes, sends 40)
            s = socket.create_connection(("127.0.0.1", server.dicom_port), timeout=5)
            s.sendall(b"\x01\x00\x00\x00\x02\x00\x00\x01" + b"\0" * 32)
            held.append(s)
        time.sleep(0.5)
        threads_held = server_threads(server)
        # the requirement: a registered C-ECHO within 5 s (measured in-process: the echo
        # alone, no program start-up); and dcmtk's echoscu gets in too
        took = echo_seconds(server.dicom_port, "CT1")
        res = echo(server)
        assert res.returncode == 0, res.stderr
        assert took < 5
        assert threads_held - threads_before < 5, (threads_before, threads_held)
        # the half-open and idle ones are closed after the handshake timeout (2 s here);
        # the 15 s only bounds the wait on a loaded machine
        for s in (held[-1], held[0]):
            s.settimeout(15)
            assert s.recv(10) == b""
    finally:
        for s in held:
            s.close()
