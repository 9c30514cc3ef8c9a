"""Issue 16, finding 1: a 70 KB instance whose codestream declares 65535 x 60000 pixels.

Against a running ``radsight serve`` with a worker: over C-STORE and STOW-RS each bomb is
refused with its status and recorded; a bomb already in the store (stored before the fix,
or put there by other means) is answered with a recorded error by WADO-RS rendered,
frames and thumbnail and by an analysis job. Throughout, the peak memory of the server and
of every worker stays bounded. The server runs under ``prlimit`` so that a regression
fails this test instead of taking the machine down.

Review finding: a multi-frame bomb whose every frame is honest (48 frames of 2048 x 2048
zeros, 6.3 MB as RLE) is refused over ``max_instance_pixels``; below it, the viewer and
WADO-RS decode only the frames they send, one at a time.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest import accept
from radsight.runtime import Runtime
from radsight.store.tables import InstanceRow, OrganisationRow
from tests.dicom import _bombs
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow

#: how much any Radsight process may grow over the whole run (decoding one bomb: GBs)
GROWTH_MB = 300
#: the server's own ceiling (prlimit --data), far below what a decoded bomb needs
SERVER_DATA_LIMIT = 3 << 30
#: the served max_instance_pixels: 48 frames of 2048 x 2048 (201 million) are over it
MAX_INSTANCE_PIXELS = 100_000_000
#: frames of 2048 x 2048 under it (67 million pixels: 134 MB decoded, 400 MB as values)
FRAMES_BELOW = 16
#: what the server may grow while it serves frames of those one at a time (one frame is 8
#: MB decoded; the viewer's packing of it takes about 130 MB of temporaries)
ONE_FRAME_MB = 250

BOMBS = [
    # (name, builder, C-STORE status, error code)
    ("JPEG 2000 65535 x 60000", lambda: _bombs.jpeg2000(60000, 65535), 0xC000,
     "pixel_data_mismatch"),
    ("JPEG 2000 30000 x 30000", lambda: _bombs.jpeg2000(30000, 30000), 0xC000,
     "pixel_data_mismatch"),
    ("JPEG SOF 65535 x 60000", lambda: _bombs.jpeg_baseline(60000, 65535), 0xC000,
     "pixel_data_mismatch"),
    ("RLE 30000 x 30000", lambda: _bombs.rle(30000, 30000), 0xA700, "too_large"),
]  # fmt: skip


def _status(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in MB (VmHWM: the peak resident set since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field} for {pid}")


def _tree(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out.extend(_tree(int(child)))
    return out


def _url(ds: pydicom.Dataset) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _peaks(server) -> dict[int, int]:  # type: ignore[no-untyped-def]
    return {pid: _status(pid, "VmHWM") for pid in _tree(server.proc.pid)}


def _send(port: int, data: bytes, path: Path) -> int | None:
    path.write_bytes(data)
    _config.STORE_SEND_CHUNKED_DATASET = True  # the bytes as they are, never decoded here
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSIGHT")
    assert assoc.is_established
    try:
        return getattr(assoc.send_c_store(path), "Status", None)
    finally:
        assoc.release()


def _stow(server, token: str, data: bytes) -> httpx.Response:  # type: ignore[no-untyped-def]
    boundary = "b0mb"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return httpx.post(
        server.url + "/dicomweb/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=60,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # type: ignore[no-untyped-def]
    from radsight.testing.peers import RadsightProcess
    from tests.conftest import write_rules

    root = tmp_path_factory.mktemp("bomb")
    rules = write_rules(root / "rules.yaml", ["radsight-bright-region"])
    server = RadsightProcess(
        root / "radsight",
        workers=1,
        env={
            "RADSIGHT_ROUTING_RULES": str(rules),
            "RADSIGHT_QUIET_PERIODS": '{"cxr": 0.5}',
            "RADSIGHT_WORKER_MEMORY_LIMIT_MB": "1024",
            "RADSIGHT_MAX_INSTANCE_PIXELS": str(MAX_INSTANCE_PIXELS),
        },
    )
    register(server, [])
    server.start()
    for pid in _tree(server.proc.pid):  # the server and the workers it has started
        subprocess.run(["prlimit", f"--pid={pid}", f"--data={SERVER_DATA_LIMIT}"], check=True)
    token = server.make_token("radiologist", "--org", "General Hospital", name="viewer")
    # warm up every path once with a good instance, so the baseline holds the codecs
    good = _bombs.jpeg2000()
    assert _send(server.dicom_port, _bombs.part10(good), root / "good.dcm") == 0x0000
    with server.http(token) as http:
        assert (
            http.get(_url(good) + "/rendered", headers={"Accept": "image/jpeg"}).status_code == 200
        )
    baseline = _peaks(server)
    yield server, token, baseline
    server.stop()


def _newest_rejection(server) -> dict:  # type: ignore[no-untyped-def]
    with server.http() as http:
        return http.get("/api/rejections", params={"limit": 1}).json()[0]


@pytest.mark.parametrize(("name", "build", "status", "code"), BOMBS, ids=[b[0] for b in BOMBS])
def test_a_bomb_is_refused_over_c_store_and_stow(served, tmp_path, name, build, status, code):
    server, token, baseline = served
    ds = build()
    data = _bombs.part10(ds)
    assert len(data) < 100_000

    assert _send(server.dicom_port, data, tmp_path / "bomb.dcm") == status
    rejection = _newest_rejection(server)
    assert (rejection["error_code"], rejection["dimse_status"]) == (code, status)
    assert rejection["source"] == "dimse" and rejection["sop_instance_uid"] == ds.SOPInstanceUID
    assert "256 x 256" in rejection["message"] or "max_frame_pixels" in rejection["message"]

    r = _stow(server, token, data)
    assert r.status_code == 409  # PS3.18 10.5.3: every instance failed
    (failed,) = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [status]
    rejection = _newest_rejection(server)
    assert (rejection["source"], rejection["error_code"]) == ("stow", code)

    with server.http(token) as http:  # nothing of it was stored
        found = http.get("/dicomweb/instances", params={"SOPInstanceUID": ds.SOPInstanceUID})
    assert found.status_code == 204 or found.json() == []
    _assert_bounded(server, baseline)


def _assert_bounded(server, baseline: dict[int, int]) -> None:  # type: ignore[no-untyped-def]
    now = _peaks(server)
    assert set(now) == set(baseline), "a Radsight process died or was restarted"
    grown = {pid: now[pid] - baseline[pid] for pid in now}
    assert max(grown.values()) < GROWTH_MB, f"peak memory grew (MB per process): {grown}"


def _plant(server, ds: pydicom.Dataset, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Store a bomb the way the code before the fix did: no pixel data check."""
    monkeypatch.setattr(accept, "check_pixel_data", lambda *_a, **_k: None)
    rt = Runtime.open(load_settings(None, data_dir=server.data_dir), run_migrations=False)
    try:
        with rt.db.session() as s:
            org_id = s.query(OrganisationRow).one().id
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        accept.accept_instance(rt, buf.getvalue(), organisation_id=org_id, source="import")
    finally:
        rt.close()


def test_a_stored_bomb_is_never_decoded(served, monkeypatch):
    server, token, baseline = served
    ds = _bombs.jpeg2000(30000, 30000, study_instance_uid=generate_uid())
    _plant(server, ds, monkeypatch)
    base = _url(ds)
    with server.http(token) as http:
        for path, accept_header in [
            (base + "/rendered", "image/jpeg"),
            (base + "/frames/1", 'multipart/related; type="application/octet-stream"'),
            (base + "/thumbnail", "image/jpeg"),
            (f"/dicomweb/studies/{ds.StudyInstanceUID}/thumbnail", "image/jpeg"),
        ]:
            r = http.get(path, headers={"Accept": accept_header})
            assert r.status_code == 500, (path, r.status_code)
            problem = r.json()
            assert problem["code"] == "stored_object_unreadable"
            assert "pixel_data_mismatch" in problem["detail"]
            assert "30000 x 30000" in problem["detail"] and "256 x 256" in problem["detail"]

        def result() -> dict | None:
            studies = http.get("/api/studies", params={"limit": 1000}).json()
            (study,) = [s for s in studies if s["study_instance_uid"] == ds.StudyInstanceUID]
            results = http.get(f"/api/studies/{study['id']}/results").json()
            return results[0] if results else None

        analysed = wait_for(result, 60, "the analysis job of the stored bomb")
    assert analysed["status"] == "not_analysed"
    assert "30000 x 30000" in analysed["reason"]
    _assert_bounded(server, baseline)


def test_absurd_viewports_are_4xx(served):
    server, token, _ = served
    good = make_radiograph(rows=64, columns=64)
    assert _send(server.dicom_port, _bombs.part10(good), Path(server.data_dir) / "v.dcm") == 0
    base = _url(good) + "/rendered"
    with server.http(token) as http:
        for viewport, status in [
            ("100000,100000", 413),
            ("64,64,0,0,99999999,99999999", 413),
            ("1e999,5", 422),
        ]:
            r = http.get(base, params={"viewport": viewport}, headers={"Accept": "image/jpeg"})
            assert r.status_code == status, (viewport, r.text)
            assert "viewport" in r.json()["detail"]


def test_radsight_import_refuses_and_counts_bombs(served, tmp_path):
    server, _, _ = served
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (_name, build, _status, _code) in enumerate(BOMBS):
        build().save_as(folder / f"bomb{i}.dcm", enforce_file_format=True)
    make_radiograph(rows=64, columns=64).save_as(folder / "good.dcm", enforce_file_format=True)
    res = server.cli("import", str(folder), "--org", "General Hospital", check=False)
    assert res.returncode == 1  # some were refused
    assert f"1 stored, 0 already there, {len(BOMBS)} rejected" in res.stdout
    assert "bomb0.dcm: pixel_data_mismatch: the JPEG 2000 SIZ header" in res.stdout
    assert "bomb3.dcm: too_large:" in res.stdout
    rejection = _newest_rejection(server)
    assert rejection["source"] == "import" and rejection["error_code"] == "too_large"


def _instance_id(server, sop_instance_uid: str) -> int:  # type: ignore[no-untyped-def]
    rt = Runtime.open(load_settings(None, data_dir=server.data_dir), run_migrations=False)
    try:
        with rt.db.session() as s:
            return int(s.query(InstanceRow).filter_by(sop_instance_uid=sop_instance_uid).one().id)
    finally:
        rt.close()


def _streamed_length(http, path: str, accept: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with http.stream("GET", path, headers={"Accept": accept}) as r:
        return r.status_code, sum(len(chunk) for chunk in r.iter_bytes())


def test_a_multiframe_bomb_over_max_instance_pixels_is_refused(served, tmp_path, monkeypatch):
    server, token, baseline = served
    ds = _bombs.multiframe_rle(48, study_instance_uid=generate_uid())
    data = _bombs.part10(ds)
    assert len(data) < 6_500_000  # 6.3 MB; 400 MB as 16-bit pixels

    assert _send(server.dicom_port, data, tmp_path / "frames.dcm") == 0xA700
    rejection = _newest_rejection(server)
    assert (rejection["error_code"], rejection["dimse_status"]) == ("too_large", 0xA700)
    assert "48 frames of 2048 x 2048 pixels" in rejection["message"]
    assert "setting max_instance_pixels" in rejection["message"]
    r = _stow(server, token, data)
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]

    # stored anyway (before the check existed): every path refuses it before decoding
    _plant(server, ds, monkeypatch)
    base = _url(ds)
    instance_id = _instance_id(server, ds.SOPInstanceUID)
    with server.http(token) as http:
        for path, accept_header in [
            (f"/web/frames/{instance_id}/0", "*/*"),
            (base + "/frames/1", 'multipart/related; type="application/octet-stream"'),
            (base + "/frames/1/rendered", "image/jpeg"),
            (base + "/bulkdata/7FE00010", "multipart/related"),
            (
                base,
                'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
            ),
        ]:
            r = http.get(path, headers={"Accept": accept_header})
            assert r.status_code == 500, (path, r.status_code)
            assert r.json()["code"] == "stored_object_unreadable"
            assert "too_large" in r.json()["detail"] and "max_instance_pixels" in r.json()["detail"]
    _assert_bounded(server, baseline)


def test_below_the_limit_only_the_frames_asked_for_are_decoded(served, tmp_path):
    server, token, _ = served
    ds = _bombs.multiframe_rle(FRAMES_BELOW, study_instance_uid=generate_uid())
    before = _peaks(server)
    assert _send(server.dicom_port, _bombs.part10(ds), tmp_path / "below.dcm") == 0x0000
    base = _url(ds)
    frame_bytes = 2048 * 2048 * 2
    instance_id = _instance_id(server, ds.SOPInstanceUID)
    with server.http(token) as http:
        r = http.get(f"/web/frames/{instance_id}/{FRAMES_BELOW - 1}")
        assert r.status_code == 200 and len(r.content) == frame_bytes
        r = http.get(
            base + "/frames/3",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
        )
        assert r.status_code == 200 and len(r.content) > frame_bytes
        every = ",".join(str(n) for n in range(1, FRAMES_BELOW + 1))
        octets = 'multipart/related; type="application/octet-stream"'
        status, length = _streamed_length(http, f"{base}/frames/{every}", octets)
        assert status == 200 and length > FRAMES_BELOW * frame_bytes
        status, length = _streamed_length(http, base + "/bulkdata/7FE00010", "multipart/related")
        assert status == 200 and length > FRAMES_BELOW * frame_bytes
        r = http.get(base + f"/frames/{FRAMES_BELOW}/rendered", headers={"Accept": "image/png"})
        assert r.status_code == 200
    now = _peaks(server)
    served_by = server.proc.pid
    grown = now[served_by] - before[served_by]
    # all frames at once would be 134 MB decoded (the viewer: 400 MB more as values)
    assert grown < ONE_FRAME_MB, f"the server grew {grown} MB serving {FRAMES_BELOW} frames"
    # the analysis job decodes every frame: bounded by max_instance_pixels, in a worker
    # under its 1024 MB ceiling (a job past it fails as memory_limit_exceeded, recorded)
    with server.http(token) as http:

        def result() -> dict | None:
            studies = http.get("/api/studies", params={"limit": 1000}).json()
            (study,) = [s for s in studies if s["study_instance_uid"] == ds.StudyInstanceUID]
            results = http.get(f"/api/studies/{study['id']}/results").json()
            return results[0] if results else None

        wait_for(result, 120, "the analysis job of the multi-frame instance")
    after = _peaks(server)
    assert set(after) == set(before), "a Radsight process died or was restarted"
