"""Scale-out storage: instance files and results on an S3-compatible server over HTTP.

The server is moto's standalone S3 server (radsight.testing.peers.S3Server): no MinIO or
Ceph RGW is installable here. Radsight talks to it with boto3 exactly as to MinIO.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest

from radsight.ingest.statuses import OUT_OF_RESOURCES
from radsight.testing.peers import S3Server, storescu
from tests.e2e.test_crash_recovery import sr_uids_at
from tests.e2e.test_dicom_flow import SECONDARY_CAPTURE, register, wait_for, write_study

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    server = S3Server(bucket="radsight-e2e").start()
    yield server
    server.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_study_is_stored_analysed_and_delivered_through_s3(
    tmp_path, make_server, storescp, s3_server, database_url
):
    server = make_server(
        workers=1, env={"RADSIGHT_DATABASE_URL": database_url, **s3_server.env("site-a")}
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    sent = write_study(tmp_path / "study", n=2)
    res = storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1")
    assert res.returncode == 0, res.stderr

    files = wait_for(lambda: len(storescp.files()) >= 3 and storescp.files(), 90, "SR + 2 SC")
    received = [pydicom.dcmread(p) for p in files]
    assert sorted(d.Modality for d in received if d.Modality == "SR") == ["SR"]
    assert sum(d.SOPClassUID == SECONDARY_CAPTURE for d in received) == 2

    # the originals, byte for byte, and the results are objects under the prefix
    keys = s3_server.keys("site-a/")
    instance_keys = {k for k in keys if k.startswith("site-a/instances/")}
    assert {tuple(k.rsplit("/", 3)[1:]) for k in instance_keys} == {
        (str(d.StudyInstanceUID), str(d.SeriesInstanceUID), f"{d.SOPInstanceUID}.dcm") for d in sent
    }
    for d in sent:
        (key,) = [k for k in instance_keys if k.endswith(f"/{d.SOPInstanceUID}.dcm")]
        body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
        stored = pydicom.dcmread(io.BytesIO(body))  # the data set as sent (meta rebuilt)
        assert stored.SOPInstanceUID == d.SOPInstanceUID and stored.PixelData == d.PixelData
    result_keys = sorted(k for k in keys if k.startswith("site-a/results/"))
    assert [k.rsplit("/", 1)[1] for k in result_keys] == ["sc-0001.dcm", "sc-0002.dcm", "sr.dcm"]
    assert not list((server.data_dir / "objects").rglob("*.dcm")), "nothing on local disk"

    # the API serves the result files from the same objects
    with server.http() as http:
        (result,) = http.get("/api/results").json()
        sr_bytes = http.get(f"/api/results/{result['id']}/files/0").content
    sr = pydicom.dcmread(io.BytesIO(sr_bytes))
    assert sr.Modality == "SR"
    assert [str(sr.SOPInstanceUID)] == sr_uids_at(storescp.out_dir)
    stored_sr = s3_server.client().get_object(Bucket=s3_server.bucket, Key=result_keys[-1])
    assert stored_sr["Body"].read() == sr_bytes


def test_an_s3_outage_at_c_store_is_a_failure_status_and_is_recorded(
    tmp_path, make_server, storescp, s3_server
):
    server = make_server(
        workers=1,
        env={**s3_server.env(), "RADSIGHT_S3_MAX_ATTEMPTS": "1", "RADSIGHT_S3_TIMEOUT_S": "2"},
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    (sent,) = write_study(tmp_path / "study", n=1)

    s3_server.stop()
    try:
        res = storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1", extra=["-v"])
    finally:
        s3_server.start()
    out = res.stdout + res.stderr
    assert "Received Store Response (Refused: OutOfResources)" in out, out  # 0xA700

    with server.http() as http:
        assert http.get("/api/studies").json() == [], "a refused instance is not indexed"
        (rejection,) = http.get("/api/rejections").json()
    assert rejection["error_code"] == "storage_error"
    assert rejection["dimse_status"] == OUT_OF_RESOURCES
    assert rejection["sop_instance_uid"] == str(sent.SOPInstanceUID)
    assert "could not store" in rejection["message"]
    assert "could not store" in server.log()

    # the sender retries once S3 is back: stored, analysed and delivered as usual
    res = storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1", extra=["-v"])
    assert "Received Store Response (Success)" in res.stdout + res.stderr
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 1, 90, "the SR after the outage")
    assert any(k.endswith(f"/{sent.SOPInstanceUID}.dcm") for k in s3_server.keys("radsight/"))
