"""Bad input over DIMSE: the right status, a record, and a server that keeps answering."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DigitalXRayImageStorageForPresentation
from pynetdicom import AE, _config

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import echoscu

pytestmark = pytest.mark.slow

MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"  # same length as the DX UID
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.8.498.999.1"


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dataset_offset(data: bytes) -> int:
    """Where the data set starts after the file meta group."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)


def not_dicom() -> bytes:
    good = part10(make_radiograph(rows=64, columns=64))
    return good[: dataset_offset(good)] + b"this is a text file, not a DICOM data set\n" * 40


def truncated() -> bytes:
    good = part10(make_radiograph(rows=256, columns=256))
    return good[: len(good) // 2]


def no_pixel_data() -> bytes:
    ds = make_radiograph(rows=64, columns=64)
    del ds.PixelData
    return part10(ds)


def sop_class_mismatch() -> bytes:
    """File meta (and so the negotiated context) says DX; the data set says mammography."""
    data = part10(make_radiograph(rows=64, columns=64))
    start = dataset_offset(data)
    dx, mg = DigitalXRayImageStorageForPresentation.encode(), MAMMOGRAPHY.encode()
    assert len(dx) == len(mg)
    return data[:start] + data[start:].replace(dx, mg, 1)


def missing_study_uid() -> bytes:
    ds = make_radiograph(rows=64, columns=64)
    ds.StudyInstanceUID = ""
    return part10(ds)


def absurd_length() -> bytes:
    data = bytearray(part10(make_radiograph(rows=64, columns=64)))
    i = data.index(b"\x10\x00\x10\x00PN")  # (0010,0010) Patient's Name, explicit VR
    data[i + 6 : i + 8] = b"\xf0\xff"  # 65,520 bytes declared, a few dozen present
    return bytes(data)


CASES = [
    # (name, bytes maker, expected C-STORE status, recorded error code)
    ("not DICOM", not_dicom, 0xC000, "not_dicom"),
    ("truncated", truncated, 0xC000, "malformed_dicom"),
    ("no pixel data", no_pixel_data, 0xA900, "missing_pixel_data"),
    ("SOP class mismatch", sop_class_mismatch, 0xA900, "sop_class_mismatch"),
    ("missing Study Instance UID", missing_study_uid, 0xA900, "missing_attribute"),
    ("absurd declared length", absurd_length, 0xC000, "malformed_dicom"),
]


def send_file(port: int, path: Path, calling: str = "MODALITY1") -> int | None:
    """C-STORE a file's bytes as they are (pynetdicom streams the data set undecoded)."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes as they are, undecoded
    meta = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta
    ae = AE(ae_title=calling)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSIGHT")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
        return getattr(status, "Status", None)
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    from radsight.testing.peers import RadsightProcess

    srv = RadsightProcess(tmp_path_factory.mktemp("bad") / "radsight", workers=0)
    srv.cli("org", "add", "General Hospital", "--region", "North")
    srv.cli("ae", "add", "General Hospital", "MODALITY1")
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(("name", "make", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_instance_gets_status_and_record(server, tmp_path, name, make, status, code):
    path = tmp_path / "bad.dcm"
    path.write_bytes(make())
    assert send_file(server.dicom_port, path) == status
    with server.http() as http:
        newest = http.get("/api/rejections", params={"limit": 1}).json()[0]
    assert newest["error_code"] == code
    assert newest["dimse_status"] == status
    assert newest["calling_ae_title"] == "MODALITY1"
    assert newest["message"]
    # the server still answers, and a good instance still goes in
    assert echoscu(server.dicom_port, calling="MODALITY1").returncode == 0
    good = tmp_path / "good.dcm"
    good.write_bytes(part10(make_radiograph(rows=64, columns=64)))
    assert send_file(server.dicom_port, good) == 0x0000


def test_unsupported_sop_class_is_refused_and_recorded(server):
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(PRIVATE_SOP_CLASS)
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="RADSIGHT")
    assert assoc.is_established
    rejected = [cx.abstract_syntax for cx in assoc.rejected_contexts]
    assoc.release()
    assert rejected == [PRIVATE_SOP_CLASS]
    with server.http() as http:
        rows = http.get("/api/rejections").json()
    assert any(
        r["error_code"] == "unsupported_sop_class" and PRIVATE_SOP_CLASS in r["message"]
        for r in rows
    )
    assert echoscu(server.dicom_port, calling="MODALITY1").returncode == 0


def test_unregistered_calling_ae_title_is_rejected_with_reason(server):
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="RADSIGHT")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    # rejected-permanent, service-user, calling-AE-title-not-recognized (PS3.8 7.1.1.9)
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    res = server.cli("rejections")
    assert "STRANGER" in res.stdout and "unknown_calling_ae_title" in res.stdout
    assert echoscu(server.dicom_port, calling="MODALITY1").returncode == 0
    assert echoscu(server.dicom_port, calling="STRANGER").returncode != 0


def test_nothing_accepted_was_lost_among_bad_input(server):
    """Every good instance acknowledged between the bad ones is stored and indexed."""
    with server.http() as http:
        studies = http.get("/api/studies", params={"limit": 1000}).json()
    total = sum(s["num_instances"] for s in studies)
    assert total == len(CASES)
    for s in studies:
        with server.http() as http:
            detail = http.get(f"/api/studies/{s['id']}").json()
        for inst in detail["instances"]:
            assert inst["size"] > 0
