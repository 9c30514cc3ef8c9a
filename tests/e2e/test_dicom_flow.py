"""A hospital's view: dcmtk storescu sends a study, results arrive at storescp and Orthanc."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import echoscu, storescu
from tests.conftest import require_tool

pytestmark = pytest.mark.slow


def write_study(folder: Path, n: int = 2, **kwargs: object) -> list[pydicom.Dataset]:
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    series_uid = generate_uid()
    out = []
    for i in range(n):
        ds = make_radiograph(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            instance_number=i + 1,
            seed=i,
            # spots the test algorithm finds (0.7): only Present findings are marked
            bright_spot=(0.3 + 0.4 * i, 0.4, 0.1),
            **kwargs,  # type: ignore[arg-type]
        )
        ds.save_as(folder / f"img{i}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def scoord_references(ds: pydicom.Dataset) -> set[str]:
    """SOP Instance UIDs that the SR's SCOORD image regions are selected from."""
    found = set()
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "SCOORD":
            for child in item.ContentSequence:
                found.add(str(child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        found |= scoord_references(item)
    return found


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def register(server, destinations: list[tuple[str, str, int]], ae: str = "MODALITY1") -> None:  # type: ignore[no-untyped-def]
    server.cli("org", "add", "General Hospital", "--region", "North")
    server.cli("ae", "add", "General Hospital", ae)
    for name, ae_title, port in destinations:
        server.cli(
            "destination",
            "add",
            "General Hospital",
            name,
            "--ae-title",
            ae_title,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )


# SQLite, the embedded default. PostgreSQL with serve's own workers, storescu in and
# storescp out, end to end: test_crash_recovery.py (kill -9 while analysing),
# test_reanalyse.py (a late instance), test_object_store.py; the ingest, pipeline and
# delivery code runs on both databases in the in-process tests (tests/pipeline, tests/ingest)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_storescu_study_reaches_storescp_and_orthanc(
    tmp_path, make_server, storescp, orthanc, database_url
):
    require_tool("storescu")
    require_tool("dciodvfy")
    require_tool("dsrdump")
    server = make_server(workers=1, env={"RADSIGHT_DATABASE_URL": database_url})
    register(
        server,
        [
            ("archive", storescp.ae_title, storescp.port),
            ("orthanc", orthanc.ae_title, orthanc.dicom_port),
        ],
    )
    server.start()
    sent = write_study(tmp_path / "study", n=2)
    study_uid = str(sent[0].StudyInstanceUID)
    sent_uids = {str(d.SOPInstanceUID) for d in sent}

    res = storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1")
    assert res.returncode == 0, res.stderr

    def delivered() -> list[Path] | None:
        files = storescp.files()
        return files if len(files) >= 3 else None

    files = wait_for(delivered, 90, "SR + 2 SC at storescp")
    datasets = {p: pydicom.dcmread(p) for p in files}
    srs = [p for p, d in datasets.items() if d.Modality == "SR"]
    scs = [p for p, d in datasets.items() if d.SOPClassUID == SECONDARY_CAPTURE]
    assert len(srs) == 1, f"expected one SR, got {[datasets[p].Modality for p in files]}"
    assert len(scs) == 2, "one Secondary Capture per analysed image"

    # the SR references the right study, series and instances
    sr = hd.sr.srread(srs[0])
    assert sr.StudyInstanceUID == study_uid
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == sent_uids
    groups = sr.content.get_planar_roi_measurement_groups()
    assert groups, "the SR has planar ROI measurement groups"
    region_refs = scoord_references(sr)
    assert region_refs and region_refs <= sent_uids
    dump = subprocess.run(["dsrdump", str(srs[0])], capture_output=True, text=True)
    assert dump.returncode == 0
    assert "radsight-bright-region" in dump.stdout

    # one SC per image, each derived from one source, with the caption burnt in
    sc_sources = set()
    for p in scs:
        sc = datasets[p]
        assert sc.StudyInstanceUID == study_uid
        sc_sources.add(sc.SourceImageSequence[0].ReferencedSOPInstanceUID)
        pixels = sc.pixel_array
        band = pixels[int(sc.Rows * 0.9) :, :, :]
        bright = (band.min(axis=2) > 200).sum()
        assert bright > 100, "the caption's white text is in the bottom band"
    assert sc_sources == sent_uids

    # everything we produce passes dciodvfy
    for p in files:
        assert dciodvfy_errors(p) == [], f"dciodvfy errors in {p.name}"

    # Orthanc received the same objects as its destination
    def orthanc_has() -> bool:
        return len(orthanc.get("/instances")) >= 3  # type: ignore[arg-type]

    wait_for(orthanc_has, 60, "3 instances in Orthanc")
    studies = orthanc.get("/studies?expand")
    assert [s["MainDicomTags"]["StudyInstanceUID"] for s in studies] == [study_uid]  # type: ignore[index]

    # the API shows the study analysed, its result, and done deliveries
    with server.http() as http:
        st = http.get("/api/studies").json()[0]
        assert st["state"] == "analysed" and st["num_instances"] == 2
        detail = http.get(f"/api/studies/{st['id']}").json()
        assert len(detail["results"]) == 1
        assert detail["results"][0]["status"] == "analysed"
        deliveries = [j for j in detail["jobs"] if j["kind"] == "deliver"]
        wait_for(
            lambda: all(
                j["state"] == "done" for j in http.get(f"/api/studies/{st['id']}").json()["jobs"]
            ),
            30,
            "deliveries done",
        )
        assert len(deliveries) == 2
        sr_bytes = http.get(f"/api/results/{detail['results'][0]['id']}/files/0").content
        assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(sr_bytes)).Modality == "SR"
    assert echoscu(server.dicom_port, calling="MODALITY1").returncode == 0
    # one summary line per association and per job, and no patient data in the log
    log = server.log()
    assert "association from MODALITY1@127.0.0.1: 2 stored, 0 failed" in log
    assert f"analysed study {study_uid}" in log
    for value in (str(sent[0].PatientName), str(sent[0].PatientID), sent[0].PatientBirthDate):
        assert value not in log, f"patient data {value!r} in the log"


def test_resent_instance_is_idempotent(tmp_path, make_server, storescp):
    server = make_server(workers=0)
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    write_study(tmp_path / "study", n=3)
    for _ in range(2):
        res = storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1")
        assert res.returncode == 0, res.stderr
    with server.http() as http:
        studies = http.get("/api/studies").json()
        assert len(studies) == 1 and studies[0]["num_instances"] == 3
        detail = http.get(f"/api/studies/{studies[0]['id']}").json()
        assert len(detail["instances"]) == 3


def test_compressed_transfer_syntaxes_are_accepted_and_analysed(
    tmp_path, make_server, storescp, shared_data
):
    """Real JPEG 2000, JPEG-LS, JPEG lossless CT slices go in over C-STORE and get analysed."""
    samples = shared_data / "dicom-samples" / "orthanc-tests"
    files = sorted(samples.glob("*.dcm"))
    assert files, "orthanc-tests samples are present"
    server = make_server(
        workers=1, env={"RADSIGHT_QUIET_PERIODS": '{"ct-chest": 1, "ct-brain": 1}'}
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    # storescu sends a compressed file as it is when asked to propose its syntax
    option = {".91": "-xw", ".81": "-xu", ".70": "-xs", ".50": "-xy"}
    for f in files:
        extra = [opt for suffix, opt in option.items() if f.stem.endswith(suffix)]
        res = storescu(server.dicom_port, [f], calling="MODALITY1", extra=extra)
        assert res.returncode == 0, res.stderr
    with server.http() as http:
        studies = http.get("/api/studies").json()
        assert sum(s["num_instances"] for s in studies) == len(files)
        rejections = http.get("/api/rejections").json()
        assert rejections == []
        syntaxes = set()
        for st in studies:
            for inst in http.get(f"/api/studies/{st['id']}").json()["instances"]:
                syntaxes.add(inst["transfer_syntax_uid"])
    assert {
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.70",
    } <= syntaxes

    with server.http() as http:

        def all_done() -> bool:
            sts = http.get("/api/studies").json()
            return all(s["state"] in ("analysed", "not_analysed") for s in sts)

        wait_for(all_done, 120, "every study analysed or not analysed")
        results = http.get("/api/results").json()
    analysed = [r for r in results if r["status"] == "analysed"]
    assert analysed, f"compressed CT was analysed: {results}"
    assert all(np.isfinite(r["study_score"]) for r in analysed)
