"""The HTTP edge in-process: every body bounded before sign-in (chunked or not), and users
of no organisation (a platform admin of single sign-on) listed over the API and the CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.cli.main import cli
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import people, tenants
from radsight.web import create_app

KiB = 1024
BOUNDARY = "b"
STOW = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}


@pytest.fixture
def small_limits(runtime: Runtime) -> Iterator[tuple[TestClient, str]]:
    """An app with max_form_bytes 64 KiB and max_request_bytes 1 MiB; a modality's token."""
    settings = runtime.settings.model_copy(
        update={"max_form_bytes": 64 * KiB, "max_request_bytes": 1024 * KiB}
    )
    rt = Runtime(settings=settings, db=runtime.db, files=runtime.files)
    registry = Registry.from_entry_points()
    app = create_app(rt, registry, load_rules(known_algorithms=registry.refs()))
    with rt.db.session() as s:
        org = tenants.create_organisation(s, "A", "North").id
        _row, token = auth.create_token(s, "modality", "radiologist", org)
    with TestClient(app, follow_redirects=False) as c:
        yield c, token


def chunks(total: int, pulled: list[int], size: int = 16 * KiB) -> Iterator[bytes]:
    """A chunked body (no Content-Length) of ``total`` bytes, counting what was pulled."""
    for _ in range(total // size):
        pulled.append(size)
        yield b"a" * size


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "path, headers",
    [
        ("/signin", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/api/organisations", {"Content-Type": "application/json"}),
    ],
)
def test_a_chunked_body_without_credentials_is_cut_at_max_form_bytes(small_limits, path, headers):
    client, _token = small_limits
    pulled: list[int] = []
    r = client.post(path, content=chunks(8 * 1024 * KiB, pulled), headers=headers)
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "too_large"
    assert "max_form_bytes (65536 bytes)" in r.json()["detail"]
    # (that the server stops reading there, with its memory bounded, is
    # tests/e2e/test_http_edge.py, over a socket: the TestClient sends the whole body)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_declared_length_over_max_form_bytes_is_refused_before_reading(small_limits):
    client, token = small_limits
    pulled: list[int] = []
    r = client.post(
        "/api/destinations",
        content=chunks(1024 * KiB, pulled),
        headers={"Authorization": f"Bearer {token}", "Content-Length": str(1024 * KiB)},
    )
    assert r.status_code == 413 and "max_form_bytes" in r.json()["detail"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stow_keeps_max_request_bytes_and_its_chunked_body_streams(small_limits):
    client, token = small_limits
    auth_header = {"Authorization": f"Bearer {token}", **STOW}
    # over max_form_bytes but within max_request_bytes: read to its end (not cut at 64 KiB);
    # not a DICOM instance, so STOW itself answers: the part failed (409)
    body = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body += b"x" * (256 * KiB) + f"\r\n--{BOUNDARY}--\r\n".encode()
    r = client.post("/dicomweb/studies", content=iter([body[:100_000], body[100_000:]]),
                    headers=auth_header)  # fmt: skip
    assert r.status_code == 409, r.text
    # past max_request_bytes: one refusal, naming max_request_bytes
    pulled: list[int] = []
    r = client.post("/dicomweb/studies", content=chunks(4 * 1024 * KiB, pulled),
                    headers=auth_header)  # fmt: skip
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert "max_request_bytes (1048576 bytes)" in r.json()["detail"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_users_of_no_organisation_are_listed_by_the_api_and_the_cli(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        # what single sign-on makes for a platform admin: no organisation, no password
        people.add_user(s, organisation_id=None, username="ada", display_name="Ada",
                        role="admin", password_hash="!", auth_provider="oidc",
                        external_subject="sub-ada")  # fmt: skip
        _row, token = auth.create_token(s, "tests", "admin", None)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/api/users")
    assert r.status_code == 200, r.text
    assert [(u["username"], u["organisation_id"]) for u in r.json()] == [("ada", None)]

    for key in [k for k in os.environ if k.startswith("RADSIGHT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADSIGHT_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("RADSIGHT_DATABASE_URL", runtime.settings.resolved_database_url)
    res = CliRunner().invoke(cli, ["user", "list"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if "ada" in ln)
    assert "platform" in line and "None" not in line, res.output
