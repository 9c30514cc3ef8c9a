"""Hostile structure inside an instance: sequences nested too deep, deflate bombs (issue 16).

A data set nested 196 deep was acknowledged over STOW-RS, then its WADO-RS metadata
answered 500 (RecursionError) and it could not be retrieved; a few kilobytes of deflated
zeros inflated whole into gigabytes. Both are refused at ingest now (every entry goes
through ``accept_instance``), measured without recursing and inflated in bounded steps;
what was stored before the limit reads back as a clean ``stored_object_unreadable``.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.dicom.instances import parse_part10, sequence_depth
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import MalformedDicom, TooLarge
from radsight.ingest.accept import accept_instance
from radsight.ingest.dimse import start_listener
from radsight.ingest.statuses import CANNOT_UNDERSTAND, SUCCESS
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope
from radsight.web import create_app

BOUNDARY = "radsight-test-boundary"
STOW = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
JSON = {"Accept": "application/dicom+json"}

# a Referenced Image Sequence (0008,1140) of undefined length, and its items
_OPEN = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\0\0" + b"\xff\xff\xff\xff"
_ITEM = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
_CLOSE = b"\xfe\xff\x0d\xe0\0\0\0\0" + b"\xfe\xff\xdd\xe0\0\0\0\0"


def nested(depth: int, ds: pydicom.Dataset | None = None) -> bytes:
    """A radiograph whose Referenced Image Sequence nests ``depth`` levels deep."""
    ds = copy.deepcopy(ds or make_radiograph(rows=16, columns=16))
    ds.ReferencedImageSequence = Sequence([Dataset()])  # a placeholder, replaced below
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    data = buf.getvalue()
    # pydicom writes it with defined lengths: one empty item
    placeholder = _OPEN[:8] + struct.pack("<I", 8) + b"\xfe\xff\x00\xe0\0\0\0\0"
    assert data.count(placeholder) == 1
    deep = _OPEN + (_ITEM + _OPEN) * (depth - 1) + _ITEM + _CLOSE * depth
    return data.replace(placeholder, deep)


def deflated(ds: pydicom.Dataset, pixel_bytes: int) -> bytes:
    """A Part 10 file in Deflated Explicit VR Little Endian whose Pixel Data is
    ``pixel_bytes`` of zeros: a few kilobytes that inflate ``pixel_bytes`` large."""
    ds = copy.deepcopy(ds)
    del ds.PixelData
    plain = DicomBytesIO()
    plain.is_little_endian, plain.is_implicit_VR = True, False
    write_dataset(plain, ds)
    body = plain.getvalue()
    meta = copy.deepcopy(ds.file_meta)
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out.write(packer.compress(body + struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0"))
    out.write(packer.compress(struct.pack("<I", pixel_bytes)))
    zeros = bytes(1024 * 1024)
    for _ in range(pixel_bytes // len(zeros)):
        out.write(packer.compress(zeros))
    out.write(packer.compress(zeros[: pixel_bytes % len(zeros)]))
    out.write(packer.flush())
    return out.getvalue()


@pytest.fixture
def org(runtime: Runtime) -> int:
    with runtime.db.session() as s:
        return tenants.create_organisation(s, "A", "R1").id


def rejections(rt: Runtime, org_id: int) -> list:
    with rt.db.session() as s:
        return studystore.list_rejections(s, scope=Scope.of(org_id))


def stored_instances(rt: Runtime, org_id: int) -> int:
    with rt.db.session() as s:
        return studystore.count_instances(s, scope=Scope.of(org_id))


# --- sequence depth ------------------------------------------------------------------------


def test_depth_is_measured_without_recursion():
    ds = pydicom.dcmread(io.BytesIO(nested(40)))
    assert sequence_depth(ds) == 40
    assert sequence_depth(make_radiograph(rows=16, columns=16)) == 0


@pytest.mark.parametrize("depth", [33, 196, 300, 5000])
def test_a_data_set_nested_too_deep_is_refused_and_recorded(runtime, org, depth):
    t0 = time.monotonic()
    with pytest.raises(MalformedDicom, match="max_sequence_depth"):
        accept_instance(runtime, nested(depth), organisation_id=org, source="import")
    assert time.monotonic() - t0 < 5
    assert stored_instances(runtime, org) == 0
    (row,) = rejections(runtime, org)
    assert row.error_code == "malformed_dicom" and "max_sequence_depth" in row.message


def test_nesting_up_to_the_limit_is_accepted(runtime, org):
    assert runtime.settings.max_sequence_depth == 32
    accept_instance(runtime, nested(32), organisation_id=org, source="import")
    assert stored_instances(runtime, org) == 1


@pytest.fixture
def stow(runtime: Runtime, org: int) -> Iterator[tuple[TestClient, Runtime]]:
    """A client of organisation A (max_sequence_depth 100, the most it may be set to)."""
    settings = runtime.settings.model_copy(
        update={"max_sequence_depth": 100, "max_instance_bytes": 1024 * 1024}
    )
    rt = Runtime(settings=settings, db=runtime.db, files=runtime.files)
    registry = Registry.from_entry_points()
    app = create_app(rt, registry, load_rules(known_algorithms=registry.refs()))
    with rt.db.session() as s:
        _row, token = auth.create_token(s, "modality", "radiologist", org)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c, rt


def multipart(*contents: bytes) -> bytes:
    out = b""
    for content in contents:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_stow_refuses_196_deep_and_what_it_stores_reads_back(stow, org):
    client, rt = stow
    at_limit = make_radiograph(rows=16, columns=16)
    r = client.post("/dicomweb/studies", content=multipart(nested(196)), headers=STOW)
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    r = client.post("/dicomweb/studies", content=multipart(nested(100, at_limit)), headers=STOW)
    assert r.status_code == 200, r.text
    study, series = at_limit.StudyInstanceUID, at_limit.SeriesInstanceUID
    m = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{at_limit.SOPInstanceUID}/metadata",
        headers=JSON,
    )
    assert m.status_code == 200, m.text
    assert "00081140" in m.json()[0]
    assert stored_instances(rt, org) == 1


def test_an_instance_stored_too_deep_before_the_limit_is_a_clean_500(stow, org):
    client, rt = stow
    ds = make_radiograph(rows=16, columns=16)
    # as it was stored before max_sequence_depth existed (the check is bypassed here)
    parsed = parse_part10(nested(150, ds), max_sequence_depth=10_000)
    accept_instance(rt, parsed, organisation_id=org, source="stow")
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    base = f"/dicomweb/studies/{study}"
    for path in (
        f"{base}/metadata",
        f"{base}/series/{series}/metadata",
        f"{base}/series/{series}/instances/{ds.SOPInstanceUID}/metadata",
    ):
        r = client.get(path, headers=JSON)
        assert r.status_code == 500, path
        assert r.json()["code"] == "stored_object_unreadable", r.json()
        assert "nest 150 deep" in r.json()["detail"]
    # the instance itself, as stored, is still there
    r = client.get(base, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200 and len(r.content) > 150 * 16


@pytest.fixture
def listener(runtime, org):  # type: ignore[no-untyped-def]
    settings = runtime.settings.model_copy(update={"dicom_port": 0, "dicom_host": "127.0.0.1"})
    rt = Runtime.open(settings)
    with rt.db.session() as s:
        tenants.create_application_entity(s, org, "MODALITY")
    _ae, server = start_listener(rt)
    yield rt, server.server_address[1]  # type: ignore[attr-defined]
    server.shutdown()  # type: ignore[attr-defined]
    rt.close()


def test_c_store_refuses_a_data_set_nested_too_deep(listener, org, tmp_path):
    rt, port = listener
    deep, ok = tmp_path / "deep.dcm", tmp_path / "ok.dcm"
    deep.write_bytes(nested(120))
    ok.write_bytes(nested(8))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(make_radiograph(rows=4, columns=4).SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSIGHT")
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(p).Status) for p in (deep, ok)]
    finally:
        assoc.release()
    assert statuses == [CANNOT_UNDERSTAND, SUCCESS]
    (row,) = rejections(rt, org)
    assert row.dimse_status == CANNOT_UNDERSTAND and "max_sequence_depth" in row.message


# --- deflate bombs -------------------------------------------------------------------------


def test_a_small_deflated_instance_is_accepted(runtime, org):
    ds = make_radiograph(rows=64, columns=64)
    data = deflated(ds, len(ds.PixelData))
    accept_instance(runtime, data, organisation_id=org, source="import")
    assert stored_instances(runtime, org) == 1


def test_a_deflate_bomb_is_refused_fast_in_bounded_memory(runtime, org):
    ds = make_radiograph(rows=64, columns=64)
    bomb = deflated(ds, 256 * 1024 * 1024)  # 256 MiB of zeros in ~256 kB
    assert len(bomb) < 400_000
    small = runtime.settings.model_copy(update={"max_instance_bytes": 8 * 1024 * 1024})
    rt = dataclasses.replace(runtime, settings=small)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(TooLarge, match="inflates to more than max_instance_bytes"):
            accept_instance(rt, bomb, organisation_id=org, source="stow")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 5
    assert peak < 16 * 1024 * 1024, f"{peak / 2**20:.0f} MiB allocated to refuse it"
    (row,) = rejections(runtime, org)
    assert row.error_code == "too_large" and "deflate" in row.message
    assert stored_instances(runtime, org) == 0


# --- values pydicom reads but cannot encode as DICOM JSON ------------------------------------


def test_metadata_leaves_out_a_value_it_cannot_encode(stow, caplog):
    client, _rt = stow
    ds = make_radiograph(rows=16, columns=16)
    ds.PatientName = "\\\\"  # only value separators: pydicom cannot encode it (the fuzz)
    ds.InstanceNumber = "987654321"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert data.count(b"987654321 ") == 1
    data = data.replace(b"987654321 ", b"1A        ")  # an IS of letters
    r = client.post("/dicomweb/studies", content=multipart(data), headers=STOW)
    assert r.status_code == 200, r.text
    m = client.get(
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/metadata",
        headers=JSON,
    )
    assert m.status_code == 200, m.text  # was 500 internal_error (IndexError, ValueError)
    (item,) = m.json()
    assert "00100010" not in item and "00200013" not in item
    assert item["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert "(00100010) IndexError" in caplog.text and ds.PatientID not in caplog.text
