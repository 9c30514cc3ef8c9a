"""DICOMweb against a running ``radsight serve``: dicomweb-client as the client, and OHIF's.

STOW-RS, QIDO-RS and WADO-RS go through a real HTTP server with a real token. The OHIF
test replays the requests OHIF v3 (its DicomWebDataSource) makes to list studies and open
one; docs/dicomweb.md lists them.
"""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from radsight.config import load_settings
from radsight.dicom.synthetic import make_ct_slice, make_radiograph
from radsight.dicom.uids import PREFIX
from radsight.runtime import Runtime
from radsight.store import people
from radsight.store.scope import Scope

JSON = {"Accept": "application/dicom+json"}


def _part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _radiograph(name: str, patient_id: str, date: str, accession: str, **kw) -> pydicom.Dataset:
    ds = make_radiograph(patient_id=patient_id, **kw)
    ds.PatientName = name
    ds.StudyDate = date
    ds.AccessionNumber = accession
    ds.StudyDescription = f"Chest {accession}"
    return ds


def _ct_series(n: int = 3) -> list[pydicom.Dataset]:
    study, series = generate_uid(prefix=PREFIX), generate_uid(prefix=PREFIX)
    out = []
    for i in range(n):
        ds = make_ct_slice(study_instance_uid=study, series_instance_uid=series, index=i)
        ds.PatientName = "Ivanova^Anna"
        ds.StudyDate = "20240305"
        ds.AccessionNumber = "ACC-CT"
        out.append(ds)
    return out


@pytest.fixture
def served(make_server, database_url):
    """A server on the given database with organisation A and a radiologist token of it."""
    server = make_server(env={"RADSIGHT_DATABASE_URL": database_url}).start()
    server.cli("org", "add", "A", "--region", "North")
    token = server.make_token("radiologist", "--org", "A", name="viewer")
    return server, token


def _client(server, token: str) -> DICOMwebClient:
    return DICOMwebClient(
        url=server.url + "/dicomweb", headers={"Authorization": f"Bearer {token}"}
    )


def _audit(server, database_url: str, action: str) -> list:
    settings = load_settings(None, data_dir=server.data_dir, database_url=database_url)
    rt = Runtime.open(settings, run_migrations=False)
    try:
        with rt.db.session() as s:
            return [
                (a.action, a.actor, a.detail)
                for a in people.list_audit(s, scope=Scope.ALL, action=action)
            ]
    finally:
        rt.close()


def test_stow_qido_wado_with_dicomweb_client(served, database_url):
    server, token = served
    client = _client(server, token)
    dx = _radiograph("Smith^John", "P-1", "20240110", "ACC-1")
    ct = _ct_series(3)

    response = client.store_instances([dx, *ct])
    stored = [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence]
    assert sorted(stored) == sorted(str(d.SOPInstanceUID) for d in [dx, *ct])
    assert "FailedSOPSequence" not in response

    studies = client.search_for_studies()
    assert len(studies) == 2
    by_uid = {s["0020000D"]["Value"][0]: pydicom.Dataset.from_json(s) for s in studies}
    found = by_uid[dx.StudyInstanceUID]
    assert found.PatientName == "Smith^John" and found.PatientID == "P-1"
    assert found.StudyDate == "20240110" and found.AccessionNumber == "ACC-1"
    assert found.ModalitiesInStudy == "DX" and found.NumberOfStudyRelatedInstances == 1
    assert by_uid[ct[0].StudyInstanceUID].NumberOfStudyRelatedSeries == 1

    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "smi"})
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [dx.StudyInstanceUID]
    ranged = client.search_for_studies(search_filters={"StudyDate": "20240301-20240331"})
    assert [s["0020000D"]["Value"][0] for s in ranged] == [ct[0].StudyInstanceUID]

    (series,) = client.search_for_series(ct[0].StudyInstanceUID)
    assert series["00201209"]["Value"] == [3] and series["00080060"]["Value"] == ["CT"]
    instances = client.search_for_instances(ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID)
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]

    retrieved = client.retrieve_study(ct[0].StudyInstanceUID)
    assert sorted(d.SOPInstanceUID for d in retrieved) == sorted(d.SOPInstanceUID for d in ct)
    one = client.retrieve_instance(dx.StudyInstanceUID, dx.SeriesInstanceUID, dx.SOPInstanceUID)
    assert one.PixelData == dx.PixelData and one.PatientName == "Smith^John"

    metadata = client.retrieve_series_metadata(ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID)
    assert len(metadata) == 3
    pixel = metadata[0]["7FE00010"]
    assert "BulkDataURI" in pixel and "InlineBinary" not in pixel
    bulk = client.retrieve_bulkdata(pixel["BulkDataURI"])
    slices = {d.SOPInstanceUID: d for d in ct}
    assert bulk[0] == slices[metadata[0]["00080018"]["Value"][0]].PixelData

    (frame,) = client.retrieve_instance_frames(
        dx.StudyInstanceUID, dx.SeriesInstanceUID, dx.SOPInstanceUID, frame_numbers=[1]
    )
    assert frame == dx.PixelData

    png = client.retrieve_instance_rendered(
        dx.StudyInstanceUID,
        dx.SeriesInstanceUID,
        dx.SOPInstanceUID,
        media_types=("image/png",),
        params={"viewport": "256,256"},
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (256, 256)

    actions = _audit(server, database_url, "study.retrieve")
    assert len(actions) >= 3 and {a[1] for a in actions} == {"viewer"}


def test_qido_filters_paging_and_warnings(served):
    server, token = served
    client = _client(server, token)
    names = ["Smith^John", "Smithers^Ann", "Jones^Mary", "Brown^Tom", "Smith^Jane"]
    datasets = [
        _radiograph(n, f"P-{i}", f"2024010{i + 1}", f"ACC-{i}", seed=i) for i, n in enumerate(names)
    ]
    client.store_instances(datasets)
    headers = {"Authorization": f"Bearer {token}", **JSON}

    def uids(params: dict) -> list[str]:
        r = httpx.get(server.url + "/dicomweb/studies", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return sorted(str(pydicom.Dataset.from_json(s).PatientName) for s in r.json())

    assert uids({"PatientName": "smith", "fuzzymatching": "true"}) == [
        "Smith^Jane",
        "Smith^John",
        "Smithers^Ann",
    ]
    assert uids({"PatientName": "Smith^J*"}) == ["Smith^Jane", "Smith^John"]
    assert uids({"PatientName": "J?NES^MARY"}) == ["Jones^Mary"]
    assert uids({"PatientName": "Smith^John"}) == ["Smith^John"]
    assert uids({"00100020": "P-3"}) == ["Brown^Tom"]
    assert uids({"StudyDate": "20240102-20240103"}) == ["Jones^Mary", "Smithers^Ann"]
    assert uids({"StudyDate": "-20240101"}) == ["Smith^John"]
    assert uids({"AccessionNumber": "ACC-4"}) == ["Smith^Jane"]
    assert uids({"ModalitiesInStudy": "CT"}) == []
    assert len(uids({"ModalitiesInStudy": "DX"})) == 5
    assert uids({"StudyDescription": "Chest ACC-2"}) == ["Jones^Mary"]
    some = [datasets[0].StudyInstanceUID, datasets[3].StudyInstanceUID]
    assert uids({"StudyInstanceUID": ",".join(some)}) == ["Brown^Tom", "Smith^John"]

    # paging: the Warning header says how many more there are (PS3.18 8.3.4.4)
    r = httpx.get(
        server.url + "/dicomweb/studies", params={"limit": 2, "offset": 1}, headers=headers
    )
    assert len(r.json()) == 2
    assert "There are 2 additional results that can be requested" in r.headers["warning"]
    pages = [
        s["0020000D"]["Value"][0]
        for off in (0, 2, 4)
        for s in client.search_for_studies(limit=2, offset=off)
    ]
    assert sorted(pages) == sorted(d.StudyInstanceUID for d in datasets)

    # includefield adds attributes; unknown keys are ignored with a Warning
    r = httpx.get(
        server.url + "/dicomweb/studies",
        params={"includefield": "StudyDescription", "limit": 1, "PatientWeight": "70"},
        headers=headers,
    )
    assert "00081030" in r.json()[0]
    assert "not supported: PatientWeight" in r.headers["warning"]
    everything = httpx.get(
        server.url + "/dicomweb/studies", params={"includefield": "all"}, headers=headers
    ).json()
    assert all("00081030" in s for s in everything)

    bad = httpx.get(
        server.url + "/dicomweb/studies", params={"StudyDate": "2024-01"}, headers=headers
    )
    assert bad.status_code == 422 and "date range" in bad.json()["detail"]
    xml = httpx.get(
        server.url + "/dicomweb/studies",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+xml"},
    )
    assert xml.status_code == 406


def test_stow_failures_and_wado_negotiation(served):
    server, token = served
    auth = {"Authorization": f"Bearer {token}"}
    good = make_radiograph(patient_id="P-9")
    boundary = "b0undary"

    def post(parts: list[bytes], path: str = "/dicomweb/studies") -> httpx.Response:
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                for p in parts
            )
            + f"--{boundary}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        return httpx.post(
            server.url + path, content=body, headers={**auth, "Content-Type": content_type}
        )

    r = post([b"this is not DICOM at all, just some text" * 4])
    assert r.status_code == 409
    (failed,) = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]

    r = post([_part10(good), b"garbage" * 20])
    assert r.status_code == 202
    assert len(r.json()["00081199"]["Value"]) == 1 and len(r.json()["00081198"]["Value"]) == 1

    other = make_radiograph(patient_id="P-10")
    r = post([_part10(other)], path=f"/dicomweb/studies/{good.StudyInstanceUID}")
    assert r.status_code == 409
    item = r.json()["00081198"]["Value"][0]
    assert item["00081155"]["Value"] == [other.SOPInstanceUID]
    assert item["00081197"]["Value"] == [0xA900]

    r = httpx.post(
        server.url + "/dicomweb/studies",
        content=b"{}",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 415
    with server.http() as admin:
        rejections = admin.get("/api/rejections").json()
    stow = [x for x in rejections if x["source"] == "stow"]
    assert len(stow) == 3  # not DICOM, garbage, and the instance of another study
    assert any(x["sop_instance_uid"] == other.SOPInstanceUID for x in stow)

    base = (
        f"{server.url}/dicomweb/studies/{good.StudyInstanceUID}/series/"
        f"{good.SeriesInstanceUID}/instances/{good.SOPInstanceUID}"
    )
    jpeg_frames = httpx.get(
        base + "/frames/1",
        headers={**auth, "Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert jpeg_frames.status_code == 406
    assert httpx.get(base + "/frames/2", headers=auth).status_code == 404
    middle = float(np.median(good.pixel_array))
    rendered = httpx.get(
        base + "/rendered",
        params={"window": f"{middle},100,linear", "viewport": "128,128"},
        headers={**auth, "Accept": "image/jpeg"},
    )
    assert rendered.headers["content-type"] == "image/jpeg"
    narrow = np.asarray(Image.open(io.BytesIO(rendered.content)))
    wide = np.asarray(
        Image.open(
            io.BytesIO(
                httpx.get(
                    base + "/rendered",
                    params={"window": f"{middle},4096", "viewport": "128,128"},
                    headers=auth,
                ).content
            )
        )
    )
    assert narrow.shape == wide.shape == (128, 128)
    assert narrow.std() > wide.std()  # a narrow window spreads the same pixels further
    bad_window = httpx.get(base + "/rendered", params={"window": "a,b"}, headers=auth)
    assert bad_window.status_code == 422
    assert httpx.get(base + "/rendered", headers={**auth, "Accept": "image/gif"}).status_code == 406
    thumb = httpx.get(
        f"{server.url}/dicomweb/studies/{good.StudyInstanceUID}/thumbnail", headers=auth
    )
    assert Image.open(io.BytesIO(thumb.content)).size == (128, 128)


def test_the_requests_ohif_v3_makes(served):
    """OHIF v3's DicomWebDataSource: study list, then open a study (docs/dicomweb.md)."""
    server, token = served
    client = _client(server, token)
    ct = _ct_series(3)
    client.store_instances(ct)
    study = ct[0].StudyInstanceUID
    http = httpx.Client(
        base_url=server.url + "/dicomweb", headers={"Authorization": f"Bearer {token}"}
    )

    # 1. the study list (qido.js mapParams), with the search box filled in
    r = http.get(
        "/studies",
        params={
            "PatientName": "*ivan*",
            "00100020": "*",
            "limit": 101,
            "offset": 0,
            "fuzzymatching": "false",
            "includefield": "00081030,00080060,00080090,00100030",
            "StudyDate": "19700102-20991231",
        },
        headers=JSON,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    (row,) = r.json()
    assert row["0020000D"]["Value"] == [study]
    assert row["00100010"]["Value"] == [{"Alphabetic": "Ivanova^Anna"}]
    assert row["00081030"]["vr"] == "LO" and row["00201208"]["Value"] == [3]

    # 2. opening it: the study's series (seriesInStudy, then the async loader's preload)
    series = http.get(
        f"/studies/{study}/series", params={"includefield": "0008103E,00080021"}, headers=JSON
    ).json()
    assert [s["0020000E"]["Value"][0] for s in series] == [ct[0].SeriesInstanceUID]
    assert series[0]["0008103E"]["vr"] == "LO"  # asked for with includefield
    preload = http.get(f"/studies/{study}/series", headers=JSON).json()
    assert [s["0020000E"] for s in preload] == [s["0020000E"] for s in series]

    # 3. each series' metadata (retrieveSeriesMetadata)
    metadata = http.get(
        f"/studies/{study}/series/{ct[0].SeriesInstanceUID}/metadata", headers=JSON
    ).json()
    assert len(metadata) == 3
    first = pydicom.Dataset.from_json(json.dumps(metadata[0]), bulk_data_uri_handler=lambda *_: b"")
    assert first.Rows == 256 and first.WindowCenter == 40

    # 4. the pixels: cornerstone's WADO-RS image loader asks for frames like this
    sop = metadata[0]["00080018"]["Value"][0]
    r = http.get(
        f"/studies/{study}/series/{ct[0].SeriesInstanceUID}/instances/{sop}/frames/1",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("multipart/related")
    assert 'type="application/octet-stream"' in r.headers["content-type"]
    slices = {d.SOPInstanceUID: d for d in ct}
    assert slices[sop].PixelData in r.content

    # 5. thumbnails: thumbnailRendering "thumbnailDirect" and "rendered"
    r = http.get(f"/studies/{study}/series/{ct[0].SeriesInstanceUID}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    r = http.get(
        f"/studies/{study}/series/{ct[0].SeriesInstanceUID}/instances/{sop}/rendered",
        headers={"Accept": "image/jpeg"},
    )
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)

    # without a token nothing answers
    anon = httpx.get(server.url + "/dicomweb/studies", headers=JSON)
    assert anon.status_code == 401


def test_a_tenant_sees_only_its_studies(served):
    server, token_a = served
    server.cli("org", "add", "B", "--region", "North")
    token_b = server.make_token("radiologist", "--org", "B", name="b-viewer")
    dx = make_radiograph(patient_id="P-A")
    _client(server, token_a).store_instances([dx])
    b = _client(server, token_b)
    assert b.search_for_studies() == []
    with pytest.raises(HTTPError) as err:
        b.retrieve_study_metadata(dx.StudyInstanceUID)
    assert err.value.response.status_code == 404
    admin = server.make_token("admin", name="ops")
    r = httpx.post(
        server.url + "/dicomweb/studies",
        content=b"--x\r\n\r\n--x--",
        headers={
            "Authorization": f"Bearer {admin}",
            "Content-Type": "multipart/related; boundary=x",
        },
    )
    assert r.status_code == 403 and "organisation" in r.json()["detail"]
