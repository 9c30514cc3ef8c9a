"""Real chest radiographs through the whole platform with the built-in rules and model.

DICOM in (real images from ../shared/data wrapped as DX, one MONOCHROME1 and 12-bit to
exercise the decoder), routed by the built-in rules to radsight-cxr, SR + SC out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import storescu
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow

PNEUMONIA = "233604007"
TB_LIKE_LESION = "RS-CXR-TBL"  # 99RADSIGHT: the TB-like lesion finding (docs/models/cxr.md)


def chest_dicom(png: Path, out: Path, *, monochrome1: bool, index: int) -> pydicom.Dataset:
    """A real radiograph as a 12-bit DX instance (the pixels rescaled, nothing else)."""
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    values = np.round(pixels / 255.0 * 4095.0).astype(np.uint16)
    ds = make_radiograph(
        rows=values.shape[0], columns=values.shape[1], seed=index, patient_id=f"CXR-{index}"
    )
    if monochrome1:
        values = 4095 - values
        ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = values.tobytes()
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.save_as(out, enforce_file_format=True)
    return ds


def test_real_chest_radiographs_get_pneumonia_results(tmp_path, make_server, storescp, shared_data):
    root = shared_data / "cxr" / "covid-qu-ex-adult"
    with open(root / "labels.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["official_split"] == "Test"]
    picks = {
        "opacity": next(r for r in rows if r["label"] == "Non-COVID"),
        "normal": next(r for r in rows if r["label"] == "Normal"),
    }
    server = make_server(workers=1, env={"RADSIGHT_ROUTING_RULES": "builtin"})
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    # a fresh install approves radsight-cxr on the evidence it ships (849 test images)
    shown = server.cli("algorithm", "show", "radsight-cxr@1.1.0").stdout
    assert "radsight-cxr 1.1.0 (installed): approved platform-wide" in shown
    sent = {}
    for i, (kind, row) in enumerate(picks.items()):
        folder = tmp_path / kind
        folder.mkdir()
        ds = chest_dicom(root / row["file"], folder / "img.dcm", monochrome1=(i == 0), index=i)
        sent[kind] = ds
        assert storescu(server.dicom_port, folder, calling="MODALITY1").returncode == 0

    def srs() -> dict[str, pydicom.Dataset] | None:
        found = {}
        for p in storescp.files():
            d = pydicom.dcmread(p)
            if d.Modality == "SR":
                found[str(d.StudyInstanceUID)] = d
        return found if len(found) == 2 else None

    by_study = wait_for(srs, 120, "an SR for each study")
    scores = {}
    for kind, ds in sent.items():
        sr = hd.sr.srread(pydicom.filebase.DicomBytesIO(_bytes(by_study[ds.StudyInstanceUID])))
        text = str(sr)
        assert PNEUMONIA in text and TB_LIKE_LESION in text and "radsight-cxr" in text
        with server.http() as http:
            (result,) = [
                r
                for r in http.get("/api/results").json()
                if r["report"]
                and r["status"] == "analysed"
                and r["sr_sop_instance_uid"] == str(sr.SOPInstanceUID)
            ]
        scores[kind] = result["study_score"]
        assert result["algorithm_name"] == "radsight-cxr"
        keys = [f["key"] for f in result["report"]["findings"]]
        assert keys == ["pneumonia", "tb-like-lesion"], keys
    assert scores["opacity"] > scores["normal"], scores

    def captures() -> int:  # the SR may reach the archive before the captures
        return sum(
            1
            for p in storescp.files()
            if pydicom.dcmread(p, stop_before_pixels=True).Modality == "OT"
        )

    wait_for(lambda: captures() >= 2 or None, 120, "2 SCs at the archive")
    assert captures() == 2


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
