"""Verdicts, audit and frames through the HTTP API: roles, tenancy, bad input, headers.

In-process (FastAPI's TestClient) on SQLite and PostgreSQL; the browser flow is in
test_web_flow.py.
"""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.bright_region import BrightRegionAlgorithm
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.pipeline.inputs import study_input_from
from radsight.pipeline.routing import load_rules
from radsight.results.report import AnalysisReport
from radsight.store import tenants
from radsight.store import worklist as worklist_store
from radsight.store.clock import utcnow
from radsight.store.tables import ResultRow
from radsight.web import create_app
from tests._limits import LIMITS

PASSWORD = "correct horse battery"


@pytest.fixture
def world(runtime):  # type: ignore[no-untyped-def]
    """Two organisations, a study of the first analysed by the test algorithm, tokens."""
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "General Hospital", "North").id
        b = tenants.create_organisation(s, "Other Clinic", "South").id
        rad = auth.create_user(s, a, "dr.ames", PASSWORD, "radiologist")
        admin = auth.create_user(s, a, "it.admin", PASSWORD, "org_admin")
        other = auth.create_user(s, b, "dr.other", PASSWORD, "radiologist")
        tokens = {
            "rad": auth.create_token(s, "t", "radiologist", a, user_id=rad.id)[1],
            "admin": auth.create_token(s, "t", "org_admin", a, user_id=admin.id)[1],
            "other": auth.create_token(s, "t", "radiologist", b, user_id=other.id)[1],
            "system": auth.create_token(s, "pacs", "radiologist", a)[1],
        }
    ds = make_radiograph(bright_spot=(0.3, 0.5, 0.12))
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accepted = accept_instance(runtime, buf.getvalue(), organisation_id=a)
    algorithm = BrightRegionAlgorithm()
    report = AnalysisReport.from_analysis(
        algorithm, algorithm.analyse(study_input_from([ds], "cxr", **LIMITS))
    )
    with runtime.db.session() as s:
        s.add(
            ResultRow(
                organisation_id=a,
                study_id=accepted.study_id,
                algorithm_name=algorithm.name,
                algorithm_version=algorithm.version,
                status="analysed",
                study_score=report.study_score,
                verdict=report.verdict,
                urgent=report.urgent,
                report=report.to_json(),
                created_at=utcnow(),
            )
        )
        s.flush()
        worklist_store.refresh_study_priority(s, accepted.study_id)
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with TestClient(app) as client:
        yield {"client": client, "tokens": tokens, "study": accepted.study_id}


def as_(world, who: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {world['tokens'][who]}"}


def test_verdicts_are_appended_and_superseded(world):
    c, study = world["client"], world["study"]
    url = f"/api/studies/{study}/verdicts"
    first = c.post(
        url,
        json={"kind": "finding", "finding_key": "bright-region", "value": "agree"},
        headers=as_(world, "rad"),
    )
    assert first.status_code == 201, first.text
    assert first.json()["algorithm_name"] == "radsight-bright-region"
    assert first.json()["algorithm_version"] == "1.0.0"
    # the user who gave it, not the name of the token it came through ("t")
    assert first.json()["username"] == "dr.ames"
    second = c.post(
        url,
        json={"kind": "finding", "finding_key": "bright-region", "value": "disagree"},
        headers=as_(world, "rad"),
    )
    assert second.json()["supersedes_id"] == first.json()["id"]
    listed = c.get(url, headers=as_(world, "rad")).json()
    assert [(v["value"], v["superseded_by"]) for v in listed] == [
        ("disagree", None),
        ("agree", second.json()["id"]),
    ]
    assert listed[0]["username"] == "dr.ames"
    work = c.get("/api/worklist", headers=as_(world, "rad")).json()["studies"]
    assert [(s["id"], s["status"]) for s in work] == [(study, "reviewed")]
    assert work[0]["ai_score"] > 0.9


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"kind": "finding", "finding_key": "nodule", "value": "agree"}, 422, "no finding"),
        ({"kind": "finding", "finding_key": "bright-region", "value": "yes"}, 422, "takes agree"),
        ({"kind": "study", "value": "sick"}, 422, "normal, abnormal"),
        ({"kind": "conclusion", "text": "   "}, 422, "needs some text"),
        ({"kind": "repeat"}, 422, "why the scan"),
        ({"kind": "repeat", "text": "x" * 1001}, 422, "at most 1000"),
        ({"kind": "opinion"}, 422, "kind"),
        ({"kind": "study", "value": "normal", "result_id": 999}, 404, "no analysed result"),
    ],
)
def test_bad_verdicts_get_a_clear_error(world, body, status, message):
    r = world["client"].post(
        f"/api/studies/{world['study']}/verdicts", json=body, headers=as_(world, "rad")
    )
    assert r.status_code == status and message in r.text, r.text


@pytest.mark.parametrize(
    "who, method, path, status",
    [
        ("other", "GET", "/api/studies/{study}/verdicts", 404),
        ("other", "POST", "/api/studies/{study}/verdicts", 404),
        ("other", "GET", "/web/frames/1/0", 404),
        ("other", "GET", "/api/worklist", 200),
        ("admin", "POST", "/api/studies/{study}/verdicts", 403),
        ("system", "POST", "/api/studies/{study}/verdicts", 403),
        ("rad", "GET", "/api/audit", 403),
        ("admin", "GET", "/api/audit", 200),
        ("rad", "GET", "/web/frames/1/0", 200),
        ("rad", "GET", "/web/frames/1/5", 404),
        ("rad", "GET", "/web/frames/99/0", 404),
    ],
)
def test_roles_and_tenancy(world, who, method, path, status):
    body = {"kind": "study", "value": "normal"}
    r = world["client"].request(
        method,
        path.format(study=world["study"]),
        headers=as_(world, who),
        json=body if method == "POST" else None,
    )
    assert r.status_code == status, r.text
    if who == "other" and path == "/api/worklist":
        assert r.json()["studies"] == []


def test_frames_carry_16_bit_values_and_a_window(world):
    r = world["client"].get("/web/frames/1/0", headers=as_(world, "rad"))
    assert r.headers["content-type"] == "application/octet-stream"
    rows, cols = int(r.headers["x-rows"]), int(r.headers["x-columns"])
    assert (rows, cols) == (512, 512) and len(r.content) == rows * cols * 2
    assert float(r.headers["x-window-width"]) > 0


def test_audit_records_who_did_what(world):
    c = world["client"]
    c.post(
        f"/api/studies/{world['study']}/verdicts",
        json={"kind": "study", "value": "abnormal"},
        headers=as_(world, "rad"),
    )
    events = c.get(
        "/api/audit", params={"action": "verdict.create"}, headers=as_(world, "admin")
    ).json()
    assert [(e["actor"], e["detail"]["kind"], e["detail"]["value"]) for e in events] == [
        ("t", "study", "abnormal")
    ]


def test_pages_send_security_headers_and_sign_in_needs_its_token(world):
    c = world["client"]
    r = c.get("/signin")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert c.get("/worklist", follow_redirects=False).headers["location"].startswith("/signin")
    c.cookies.clear()
    r = c.post("/signin", data={"username": "dr.ames", "password": PASSWORD, "csrf_token": "x"})
    assert r.status_code == 403 and "reload" in r.text
    r = c.get("/signin?next=//evil.example/x")
    assert 'value="/worklist"' in r.text  # only paths of this site
