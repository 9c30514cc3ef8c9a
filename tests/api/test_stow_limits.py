"""STOW-RS within limits: the body, each part, trailing data, re-sent instances."""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.statuses import CANNOT_UNDERSTAND, DUPLICATE_SOP_INSTANCE, OUT_OF_RESOURCES
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope
from radsight.web import create_app

BOUNDARY = "radsight-test-boundary"
STOW = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
MiB = 1024 * 1024


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multipart(*contents: bytes) -> bytes:
    out = b""
    for content in contents:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def stow(runtime: Runtime) -> Iterator[tuple[TestClient, Runtime, int]]:
    """A client of organisation A; max_request_bytes 1 MiB, max_instance_bytes 100 kB."""
    settings = runtime.settings.model_copy(
        update={"max_request_bytes": MiB, "max_instance_bytes": 100_000}
    )
    rt = Runtime(settings=settings, db=runtime.db, files=runtime.files)
    registry = Registry.from_entry_points()
    app = create_app(rt, registry, load_rules(known_algorithms=registry.refs()))
    with rt.db.session() as s:
        org = tenants.create_organisation(s, "A", "North").id
        _row, token = auth.create_token(s, "modality", "radiologist", org)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c, rt, org


def failure_reasons(response) -> list[int]:  # type: ignore[no-untyped-def]
    return [item["00081197"]["Value"][0] for item in response.json()["00081198"]["Value"]]


def test_a_declared_length_over_the_limit_is_refused_before_reading(stow):
    client, _rt, _org = stow
    pulled = []

    def body() -> Iterator[bytes]:
        for _ in range(64):
            pulled.append(1)
            yield bytes(MiB)

    r = client.post(
        "/dicomweb/studies", content=body(), headers={**STOW, "Content-Length": str(64 * MiB)}
    )
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert "max_request_bytes" in r.json()["detail"]
    assert len(pulled) <= 2, f"the server read {len(pulled)} MiB of a refused body"


def test_a_chunked_body_is_cut_at_the_limit(stow):
    client, rt, org = stow

    def body() -> Iterator[bytes]:
        yield multipart(part10(make_radiograph(rows=64, columns=64)))[:-20]
        for _ in range(8):
            yield bytes(MiB)

    r = client.post("/dicomweb/studies", content=body(), headers=STOW)
    assert r.status_code == 413 and "it was cut there" in r.json()["detail"]
    with rt.db.session() as s:
        assert studystore.count_instances(s, scope=Scope.of(org)) == 0


def test_a_part_over_max_instance_bytes_fails_alone(stow):
    client, _rt, _org = stow
    big = part10(make_radiograph(rows=512, columns=512))  # 512 kB of pixels
    small = part10(make_radiograph(rows=64, columns=64))
    r = client.post("/dicomweb/studies", content=multipart(big, small), headers=STOW)
    assert r.status_code == 202
    assert failure_reasons(r) == [OUT_OF_RESOURCES]
    assert len(r.json()["00081199"]["Value"]) == 1


@pytest.mark.parametrize("cut", [None, 200], ids=["valid instance", "200 bytes of DICOM"])
def test_zeros_after_an_instance_are_refused_fast(runtime, cut):
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "A", "North").id
        _row, token = auth.create_token(s, "modality", "radiologist", org)
    good = part10(make_radiograph(rows=64, columns=64))
    body = multipart((good if cut is None else good[:cut]) + bytes(64 * MiB))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        t0 = time.process_time()
        r = client.post("/dicomweb/studies", content=body, headers=STOW)
        cpu = time.process_time() - t0
    assert r.status_code == 409 and failure_reasons(r) == [CANNOT_UNDERSTAND]
    assert cpu < 5.0, f"{cpu:.1f} s of CPU for a refused instance"
    with runtime.db.session() as s:
        (row,) = studystore.list_rejections(s, scope=Scope.of(org))
        assert "bytes after the end of the data set" in row.message
        assert studystore.count_instances(s, scope=Scope.of(org)) == 0


def test_a_different_instance_under_a_known_uid_is_409(stow):
    client, rt, org = stow
    ds = make_radiograph(rows=64, columns=64)
    assert client.post("/dicomweb/studies", content=multipart(part10(ds)), headers=STOW).is_success
    same = client.post("/dicomweb/studies", content=multipart(part10(ds)), headers=STOW)
    assert same.status_code == 200, "the same instance again is an idempotent success"
    other = copy.deepcopy(ds)
    other.PatientID = "SOMEONE-ELSE"
    r = client.post("/dicomweb/studies", content=multipart(part10(other)), headers=STOW)
    assert r.status_code == 409 and failure_reasons(r) == [DUPLICATE_SOP_INSTANCE]
    with rt.db.session() as s:
        (row,) = studystore.list_rejections(s, scope=Scope.of(org))
    assert row.error_code == "duplicate_sop_instance" and row.source == "stow"
