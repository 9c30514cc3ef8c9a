"""Orthanc as the hospital's PACS: it sends a study to Radsight and receives the results.

The worked example of docs/connecting-a-pacs.md, run for real.
"""

from __future__ import annotations

import io

import httpx
import pytest

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import Orthanc
from tests.conftest import require_tool
from tests.e2e.test_dicom_flow import wait_for

pytestmark = pytest.mark.slow


def test_orthanc_sends_a_study_and_gets_sr_and_sc_back(tmp_path, make_server):
    require_tool("Orthanc")
    server = make_server(workers=1)
    orthanc = Orthanc(
        tmp_path / "orthanc",
        DicomModalities={"radsight": ["RADSIGHT", "127.0.0.1", server.dicom_port]},
    )
    server.cli("org", "add", "General Hospital", "--region", "North")
    server.cli("ae", "add", "General Hospital", orthanc.ae_title)
    server.cli(
        "destination",
        "add",
        "General Hospital",
        "pacs",
        "--ae-title",
        orthanc.ae_title,
        "--host",
        "127.0.0.1",
        "--port",
        str(orthanc.dicom_port),
    )
    server.start()
    orthanc.start()
    try:
        buf = io.BytesIO()
        ds = make_radiograph(bright_spot=(0.7, 0.4, 0.12))
        ds.save_as(buf, enforce_file_format=True)
        api = httpx.Client(base_url=orthanc.url, timeout=60)
        uploaded = api.post("/instances", content=buf.getvalue()).json()
        study_id = uploaded["ParentStudy"]

        # Orthanc's echo offers more than storage; nothing of it is a refused instance
        assert api.post("/modalities/radsight/echo", content="{}").status_code == 200
        store = api.post("/modalities/radsight/store", content=study_id)
        assert store.status_code == 200, store.text

        def results_in_orthanc() -> list | None:
            series = api.get(f"/studies/{study_id}/series?expand").json()
            modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
            return series if modalities == ["DX", "OT", "SR"] else None

        series = wait_for(results_in_orthanc, 90, "the SR and SC back in Orthanc's study")
        descriptions = {s["MainDicomTags"].get("SeriesDescription", "") for s in series}
        assert any("radsight-bright-region" in d for d in descriptions)
        with server.http() as http:
            assert http.get("/api/rejections").json() == []
            (study,) = http.get("/api/studies").json()
        assert study["study_instance_uid"] == ds.StudyInstanceUID
        assert study["state"] == "analysed"
    finally:
        orthanc.stop()
