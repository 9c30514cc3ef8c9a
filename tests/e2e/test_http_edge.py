"""``radsight serve`` over a socket: a chunked body is cut at its limit before sign-in, and
X-Forwarded-For is believed only from ``trusted_proxies`` (the sign-in throttle and the
audit trail see the real address)."""

from __future__ import annotations

import json
import re
import select
import socket
import time

import httpx
import pytest

KiB = 1024
MiB = 1024 * KiB


def chunked_post(port: int, path: str, content_type: str, total: int) -> tuple[int, int, bytes]:
    """POST a chunked body of up to ``total`` bytes, 64 KiB a chunk, stopping when the
    server answers: (status, bytes sent by then, answer)."""
    sent = 0
    chunk = b"a" * (64 * KiB)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        deadline = time.monotonic() + 20
        while sent < total and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # it answered and closed
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 60:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, sent, answer


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1])  # type: ignore[index]


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):  # type: ignore[no-untyped-def]
    from radsight.testing.peers import RadsightProcess

    env = {
        "RADSIGHT_MAX_FORM_BYTES": str(256 * KiB),
        "RADSIGHT_SIGNIN_MAX_FAILURES_PER_ADDRESS": "3",
        **getattr(request, "param", {}),
    }
    srv = RadsightProcess(
        tmp_path_factory.mktemp("edge"), env=env, workers=0, memory_limit_mb=1536
    ).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    "path, content_type",
    [("/signin", "application/x-www-form-urlencoded"), ("/api/organisations", "application/json")],
)
def test_a_chunked_body_before_sign_in_is_cut_at_max_form_bytes(server, path, content_type):
    before = rss_kib(server.proc.pid)
    status, sent, answer = chunked_post(server.http_port, path, content_type, 64 * MiB)
    assert status == 413, answer[:300]
    assert b"application/problem+json" in answer and b"max_form_bytes" in answer
    # answered soon after the limit (256 KiB), not after the 64 MiB were sent
    assert sent < 8 * MiB, f"the server took {sent} bytes before answering"
    assert rss_kib(server.proc.pid) - before < 32 * KiB


def _signin_failure(client: httpx.Client, forwarded_for: str) -> int:
    page = client.get("/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    r = client.post(
        "/signin",
        data={"username": "nobody", "password": "wrong", "csrf_token": token},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return r.status_code


def _audited_address(server, forwarded_for: str) -> str:  # type: ignore[no-untyped-def]
    with server.http() as c:
        r = c.get("/api/studies", headers={"X-Forwarded-For": forwarded_for})
        assert r.status_code == 200, r.text
    out = server.cli("audit", "list", "--action", "study.search", "--limit", "1", "--json")
    return json.loads(out.stdout)[0]["remote_addr"]


def test_a_direct_client_cannot_name_its_address(server):
    # the audit trail records the connection's address, not the header's
    assert _audited_address(server, "203.0.113.7") == "127.0.0.1"
    # a fresh X-Forwarded-For for each attempt does not escape the address throttle
    with httpx.Client(base_url=server.url, timeout=30) as client:
        statuses = [_signin_failure(client, f"198.51.100.{i}") for i in range(1, 6)]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429], statuses


@pytest.mark.parametrize("server", [{"RADSIGHT_TRUSTED_PROXIES": "127.0.0.1"}], indirect=True)
def test_a_trusted_proxy_names_the_client(server):
    assert _audited_address(server, "203.0.113.7") == "203.0.113.7"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # each forwarded address has its own count: none is throttled after 5 attempts
        statuses = [_signin_failure(client, f"198.51.100.{i}") for i in range(1, 6)]
    assert 429 not in statuses, statuses
