"""A chest CT through the whole platform with the built-in rules and model.

DICOM in (a synthetic chest CT phantom with a ground-glass patch, 32 axial slices, plus a
scout in its own series, by C-STORE), routed by the built-in rules to radsight-ct-chest,
SR + SC out at the destination; a CT of a soft-tissue cylinder (no lungs) comes back
"not analysed" with the reason.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from radsight.algorithms.ct_chest.phantom import chest_phantom
from radsight.dicom.synthetic import make_ct_slice
from radsight.testing.peers import storescu
from tests.conftest import approve_with_override
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow

GGO = "1217294009"


def write_series(hu: np.ndarray, folder: Path, study_uid: str, patient_id: str) -> list[str]:
    """The volume as CT Image Storage instances, 0.7 mm pixels, 2.5 mm apart."""
    series_uid = generate_uid()
    uids = []
    for k in range(hu.shape[0]):
        ds = make_ct_slice(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            index=k,
            rows=hu.shape[1],
            columns=hu.shape[2],
            patient_id=patient_id,
        )
        ds.PixelData = np.clip(np.round(hu[k] + 1024), 0, 4095).astype(np.uint16).tobytes()
        ds.ConvolutionKernel = "B60f"
        ds.save_as(folder / f"ct{k:03d}.dcm", enforce_file_format=True)
        uids.append(str(ds.SOPInstanceUID))
    return uids


def write_scout(folder: Path, study_uid: str, patient_id: str) -> str:
    ds = make_ct_slice(
        study_instance_uid=study_uid,
        series_instance_uid=generate_uid(),
        index=0,
        patient_id=patient_id,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(folder / "scout.dcm", enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_chest_ct_gets_lesion_marks_and_a_grade(tmp_path, make_server, storescp):
    server = make_server(workers=1, env={"RADSIGHT_ROUTING_RULES": "builtin"})
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    # it does not start approved (its shipped evidence fails the acceptance rule):
    # this test is about what an approved version delivers
    approve_with_override(server, "radsight-ct-chest@1.0.0")
    sick, empty = tmp_path / "sick", tmp_path / "empty"
    sick.mkdir()
    empty.mkdir()
    sick_study, empty_study = generate_uid(), generate_uid()
    slices = write_series(chest_phantom(32, 256, seed=5), sick, sick_study, "CTC-1")
    scout = write_scout(sick, sick_study, "CTC-1")
    yy, xx = np.mgrid[0:256, 0:256]
    cylinder = np.where((yy - 128) ** 2 + (xx - 128) ** 2 < 100**2, 40.0, -1000.0)
    write_series(np.repeat(cylinder[None], 20, 0).astype(np.float32), empty, empty_study, "CTC-2")
    for folder in (sick, empty):
        assert storescu(server.dicom_port, folder, calling="MODALITY1").returncode == 0

    def sr() -> pydicom.Dataset | None:
        for p in storescp.files():
            d = pydicom.dcmread(p)
            if d.Modality == "SR" and d.StudyInstanceUID == sick_study:
                return d
        return None

    report = wait_for(sr, 240, "the chest CT's SR")
    buf = pydicom.filebase.DicomBytesIO()
    report.save_as(buf, enforce_file_format=True)
    text = str(hd.sr.srread(pydicom.filebase.DicomBytesIO(buf.getvalue())))
    assert GGO in text and "radsight-ct-chest" in text and "RS-CT-INV25" in text

    def results() -> dict | None:
        with server.http() as http:
            rows = [
                r
                for r in http.get("/api/results").json()
                if r["algorithm_name"] == "radsight-ct-chest"
            ]
        return {r["status"]: r for r in rows} if len(rows) == 2 else None

    by_status = wait_for(results, 240, "both chest CT results")
    analysed = by_status["analysed"]
    findings = {f["key"]: f for f in analysed["report"]["findings"]}
    lesion = findings["ggo-consolidation"]
    assert lesion["positive"] and lesion["regions"]
    marked = {r["sop_instance_uid"] for r in lesion["regions"]}
    assert marked <= set(slices) and scout not in marked
    assert analysed["study_score"] >= 0.5
    assert "no lungs found" in by_status["not_analysed"]["reason"]

    # one SC per source image of the analysed study (32 slices and the scout); the SR may
    # reach the archive before the last captures of the same delivery
    def captures() -> int:
        return sum(
            1
            for p in storescp.files()
            if (d := pydicom.dcmread(p, stop_before_pixels=True)).Modality == "OT"
            and d.StudyInstanceUID == sick_study
        )

    wait_for(lambda: captures() >= 33 or None, 120, "33 SCs of the chest CT at the archive")
    assert captures() == 33
