"""Errors at the HTTP edge, mapped by class: problem+json for the API, a page for browsers.

A caller's bad value is 422 ``invalid_input``; a file Radsight stored that no longer reads
or decodes is 500 ``stored_object_unreadable`` (not 400, not 406); a bare exception is 500
``internal_error``, logged once.
"""

from __future__ import annotations

import io
import logging

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.pipeline.routing import load_rules
from radsight.store import tenants
from radsight.store.tables import InstanceRow
from radsight.web import create_app

#: what Chromium sends when it opens a URL
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def site(runtime):  # type: ignore[no-untyped-def]
    """An app, an admin token of one organisation, and one stored radiograph."""
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))

    @app.get("/test-only/bug")
    def bug() -> None:
        raise ValueError("a bug's secret text")

    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "General Hospital", "North").id
        token = auth.create_token(s, "t", "org_admin", org)[1]
    ds = make_radiograph()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(runtime, buf.getvalue(), organisation_id=org)
    with runtime.db.session() as s:
        row = s.query(InstanceRow).one()
        key, instance_id = row.storage_key, row.id
    base = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield {
            "client": client,
            "rt": runtime,
            "ds": ds,
            "key": key,
            "base": base,
            "instance_id": instance_id,
        }


def _problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/dicomweb/studies", {"StudyDate": "yesterday"}, "date range"),
        ("/dicomweb/studies", {"limit": "ten"}, "limit must be an integer"),
        ("{base}/rendered", {"window": "40"}, "window must be center,width"),
        ("{base}/frames/one", {}, "comma-separated list of numbers"),
        ("/api/monitoring/clinical", {"group_by": "patient_name"}, "cannot group by"),
    ],
)
def test_a_bad_query_value_is_422_invalid_input(site, path, params, message):
    r = site["client"].get(path.format(base=site["base"]), params=params)
    assert message in _problem(r, 422, "invalid_input")["detail"]


def _corrupt(site, how: str) -> None:  # type: ignore[no-untyped-def]
    """Damage the stored file behind Radsight's back, as a failing disk would."""
    if how == "unreadable":
        data = b"\0" * 64 + b"no longer a DICOM file"
    else:  # the header reads, the pixel data is cut short
        ds = pydicom.dcmread(io.BytesIO(site["rt"].files.get(site["key"])))
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        data = out.getvalue()
    site["rt"].files.put(site["key"], data)


@pytest.mark.parametrize("how", ["unreadable", "short pixel data"])
@pytest.mark.parametrize("what", ["/rendered", "/frames/1", "/thumbnail", "viewer frame"])
def test_a_stored_file_that_no_longer_decodes_is_500(site, how, what):
    client = site["client"]
    path = f"/web/frames/{site['instance_id']}/0" if what == "viewer frame" else site["base"] + what
    assert client.get(path).status_code == 200, "it decodes before the damage"
    _corrupt(site, how)
    body = _problem(client.get(path), 500, "stored_object_unreadable")
    assert "cannot be" in body["detail"] and body["instance"] == path


@pytest.mark.parametrize("how", ["unreadable", "short pixel data"])
def test_a_stored_instance_that_cannot_be_converted_is_500(runtime, how):
    """Explicit VR Little Endian asked of an RLE instance whose stored file is damaged."""
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "General Hospital", "North").id
        token = auth.create_token(s, "t", "org_admin", org)[1]
    ds = make_radiograph()
    ds.compress(RLELossless)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(runtime, buf.getvalue(), organisation_id=org)
    with runtime.db.session() as s:
        key = s.query(InstanceRow).one().storage_key
    path = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
    )
    headers = {"Authorization": f"Bearer {token}", "Accept": accept}
    with TestClient(app) as client:
        assert client.get(path, headers=headers).status_code == 200
        _corrupt({"rt": runtime, "key": key}, how)
        body = _problem(client.get(path, headers=headers), 500, "stored_object_unreadable")
    assert key in body["detail"]


def test_a_stored_file_that_no_longer_reads_is_500_for_metadata_too(site):
    _corrupt(site, "unreadable")
    _problem(site["client"].get(site["base"] + "/metadata"), 500, "stored_object_unreadable")


def test_the_same_error_is_a_page_for_a_browser(site):
    _corrupt(site, "short pixel data")
    r = site["client"].get(site["base"] + "/rendered", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert '<code id="error-code">stored_object_unreadable</code>' in r.text
    assert "cannot be decoded" in r.text


@pytest.mark.parametrize(
    ("path", "status", "code", "message"),
    [
        ("/studies/999", 404, "not_found", "study 999 does not exist"),
        ("/worklist?from=2024-13-99", 422, "invalid_input", "give a date as YYYY-MM-DD"),
        ("/audit?study_id=abc", 422, "invalid_input", "give a study number"),
    ],
)
def test_pages_show_errors_as_pages(site, path, status, code, message):
    # no Accept header: a page's error is a page whoever asks
    r = site["client"].get(path, headers={"Accept": "*/*"})
    assert r.status_code == status and r.headers["content-type"].startswith("text/html")
    assert f'<code id="error-code">{code}</code>' in r.text and message in r.text


def test_a_bare_exception_is_500_internal_error_logged_once(site, caplog):
    with caplog.at_level(logging.ERROR):
        r = site["client"].get("/test-only/bug")
    body = _problem(r, 500, "internal_error")
    assert "secret" not in body["detail"], "a bug's text stays in the log"
    logged = [rec for rec in caplog.records if rec.exc_info and "/test-only/bug" in rec.message]
    assert len(logged) == 1 and "a bug's secret text" in caplog.text
    # and the server goes on answering
    assert site["client"].get("/health").status_code == 200
