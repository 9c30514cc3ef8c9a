"""Every read of patient data and every tenancy change is in the audit trail.

The first test walks ``app.routes``: each GET route whose path serves studies, series,
instances, frames, results or the worklist is requested once, from its own address, and
must write an event naming the user, the study and that address. A new route of that kind
that forgets to record its reads fails here.
"""

from __future__ import annotations

import inspect
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.store.audit import verify_chain
from radsight.store.clock import utcnow
from radsight.store.tables import (
    AlertRow,
    AuditEventRow,
    InstanceRow,
    JobRow,
    ResultObjectRow,
    ResultRow,
)
from radsight.web import create_app

#: paths that return patient data (images, metadata, names, results)
PATIENT_DATA = re.compile(
    r"^(/dicomweb/|/api/(studies|results|worklist)|/web/frames|/studies/|/worklist$)"
)
#: what each request may be recorded as
READ_ACTIONS = {
    "study.retrieve", "study.images", "study.search", "study.read", "study.open",
    "result.read", "result.search", "result.download", "worklist.view",
}  # fmt: skip


@dataclass
class World:
    rt: Runtime
    app: FastAPI
    values: dict[str, Any]
    cookie: str
    admin_token: str


@pytest.fixture
def world(runtime: Runtime) -> World:
    """SQLite and PostgreSQL."""
    return _build_world(runtime)


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    """SQLite only: the route walk makes some 40 requests."""
    rt = Runtime.open(load_settings(None, data_dir=tmp_path / "data", unsafe_no_fsync=True))
    yield _build_world(rt)
    rt.close()


def _build_world(runtime: Runtime) -> World:
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "City Hospital", "North")
        user = auth.create_user(s, org.id, "alice", "alice-password-1", "radiologist")
        cookie, _csrf = auth.create_session(s, user, 3600)
        _t, admin_token = auth.create_token(s, "ops", "admin", None)
        org_id = org.id
    ds = make_radiograph(study_instance_uid=generate_uid())
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accepted = accept_instance(runtime, buf.getvalue(), organisation_id=org_id)
    with runtime.db.session() as s:
        inst = s.scalars(select(InstanceRow)).one()
        result = ResultRow(
            organisation_id=org_id,
            study_id=accepted.study_id,
            algorithm_name="radsight-bright-region",
            algorithm_version="1.0.0",
            status="analysed",
            mode="clinical",
            study_score=0.2,
            verdict="normal",
            report={},
            objects=[
                ResultObjectRow(
                    position=0,
                    role="sc",
                    sop_class_uid=inst.sop_class_uid,
                    series_instance_uid=ds.SeriesInstanceUID,
                    sop_instance_uid=inst.sop_instance_uid,
                    storage_key=inst.storage_key,
                )
            ],
            created_at=utcnow(),
        )
        s.add(result)
        s.flush()
        values = {
            "study_id": accepted.study_id,
            "result_id": result.id,
            "index": 0,
            "study": ds.StudyInstanceUID,
            "series": ds.SeriesInstanceUID,
            "instance": ds.SOPInstanceUID,
            "frames": 1,
            "frame": 1,
            "tag": "7FE00010",
            "instance_id": inst.id,
            "frame_index": 0,
        }
    return World(runtime, app, values, cookie, admin_token)


def _routes(app: FastAPI) -> Iterator[tuple[str, set[str]]]:
    """(full path, methods) of every route, FastAPI's included routers flattened."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield route.path, route.methods
        elif hasattr(route, "effective_route_contexts"):
            for ctx in route.effective_route_contexts():
                if isinstance(ctx.original_route, APIRoute):
                    yield ctx.path, set(ctx.methods or ctx.original_route.methods)


def _accept(path: str) -> str:
    if path.endswith(("/rendered", "/thumbnail")):
        return "image/png"
    if re.search(r"/frames/\{frames\}$|/bulkdata/", path):
        return 'multipart/related; type="application/octet-stream"'
    if (
        path.startswith("/dicomweb/")
        and not path.endswith("/metadata")
        and (path.endswith(("{study}", "{series}", "{instance}")))
    ):
        return 'multipart/related; type="application/dicom"'
    return "application/dicom+json, application/json, text/html, */*"


def _events_after(rt: Runtime, last: int) -> list[AuditEventRow]:
    with rt.db.session() as s:
        return list(s.scalars(select(AuditEventRow).where(AuditEventRow.id > last)))


def _last_id(rt: Runtime) -> int:
    with rt.db.session() as s:
        return s.scalar(select(AuditEventRow.id).order_by(AuditEventRow.id.desc())) or 0


def test_every_route_that_returns_patient_data_records_the_read(sqlite_world: World) -> None:
    w = sqlite_world
    paths = sorted({p for p, m in _routes(w.app) if "GET" in m and PATIENT_DATA.match(p)})
    assert len(paths) >= 30, paths  # the walk found the DICOMweb, JSON and page routes
    unrecorded = []
    for n, template in enumerate(paths):
        path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(w.values[m.group(1)]), template)
        address = f"10.9.{n // 250}.{n % 250 + 1}"
        last = _last_id(w.rt)
        with TestClient(w.app, client=(address, 40000), follow_redirects=False) as c:
            c.cookies.set("radsight_session", w.cookie)
            r = c.get(path, headers={"Accept": _accept(template)})
        assert r.status_code == 200, (template, r.status_code, r.text[:300])
        events = [e for e in _events_after(w.rt, last) if e.action in READ_ACTIONS]
        good = [e for e in events if e.actor == "alice" and e.remote_addr == address]
        if not good:
            unrecorded.append(template)
            continue
        names_a_study = "{study" in template or "{instance_id}" in template
        names_a_study = names_a_study or "{result_id}" in template
        if names_a_study and not template.endswith(("/series", "/instances")):
            assert good[0].study_id == w.values["study_id"], template
    assert not unrecorded, f"these routes return patient data and record no read: {unrecorded}"
    with w.rt.db.session() as s:
        assert verify_chain(s).ok


def test_the_viewer_frame_stream_is_one_event_a_minute(sqlite_world: World) -> None:
    """300 frame requests of a study by one user: one ``study.images`` event, not 300."""
    w = sqlite_world
    last = _last_id(w.rt)
    with TestClient(w.app, client=("10.1.1.1", 40000)) as c:
        c.cookies.set("radsight_session", w.cookie)
        for _ in range(30):
            assert c.get(f"/web/frames/{w.values['instance_id']}/0").status_code == 200
    images = [e for e in _events_after(w.rt, last) if e.action == "study.images"]
    assert [(e.actor, e.study_id, e.remote_addr) for e in images] == [
        ("alice", w.values["study_id"], "10.1.1.1")
    ]
    # an explicit download is never folded: each one is an event
    last = _last_id(w.rt)
    with TestClient(w.app, client=("10.1.1.1", 40000)) as c:
        c.cookies.set("radsight_session", w.cookie)
        for _ in range(3):
            url = f"/api/results/{w.values['result_id']}/files/0"
            assert c.get(url).status_code == 200
    downloads = [e for e in _events_after(w.rt, last) if e.action == "result.download"]
    assert len(downloads) == 3
    assert downloads[0].detail["role"] == "sc" and downloads[0].study_id == w.values["study_id"]


def test_wado_and_result_downloads_name_user_study_and_address(world: World) -> None:
    w = world
    v = w.values
    last = _last_id(w.rt)
    with TestClient(w.app, client=("192.0.2.7", 40000)) as c:
        c.cookies.set("radsight_session", w.cookie)
        r = c.get(
            f"/dicomweb/studies/{v['study']}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        assert r.status_code == 200
        assert c.get(f"/api/results/{v['result_id']}/files/0").status_code == 200
    got = [(e.action, e.actor, e.study_id, e.remote_addr) for e in _events_after(w.rt, last)]
    assert got == [
        ("study.retrieve", "alice", v["study_id"], "192.0.2.7"),
        ("result.download", "alice", v["study_id"], "192.0.2.7"),
    ]


def test_tenancy_changes_through_the_api_are_recorded(world: World) -> None:
    w = world
    last = _last_id(w.rt)
    h = {"Authorization": f"Bearer {w.admin_token}"}
    with TestClient(w.app, headers=h, client=("198.51.100.4", 40000)) as c:
        assert (
            c.post("/api/organisations", json={"name": "Ward 9", "region": "South"}).status_code
            == 201
        )  # noqa: E501
        assert (
            c.post("/api/organisations/Ward 9/ae-titles", json={"ae_title": "CT9"}).status_code
            == 201
        )  # noqa: E501
        body = {"name": "pacs", "ae_title": "PACS9", "host": "10.0.0.9", "port": 104}
        assert c.post("/api/organisations/Ward 9/destinations", json=body).status_code == 201
        r = c.patch("/api/organisations/Ward 9/destinations/pacs", json={"enabled": False})
        assert r.status_code == 200
        # a refused change writes no change event
        assert (
            c.post("/api/organisations", json={"name": "Ward 9", "region": "S"}).status_code == 409
        )  # noqa: E501
        verify = c.get("/api/audit/verify").json()
    events = _events_after(w.rt, last)
    got = [(e.action, e.actor, e.remote_addr) for e in events]
    assert got == [
        ("organisation.create", "ops", "198.51.100.4"),
        ("ae_title.create", "ops", "198.51.100.4"),
        ("destination.create", "ops", "198.51.100.4"),
        ("destination.update", "ops", "198.51.100.4"),
    ]
    assert len({e.organisation_id for e in events}) == 1
    assert events[2].detail == {
        "name": "pacs",
        "ae_title": "PACS9",
        "host": "10.0.0.9",
        "port": 104,
        "tls": False,
        "tls_server_name": "",
    }  # noqa: E501
    assert events[3].detail == {"name": "pacs", "enabled": False}
    assert verify["ok"] is True and verify["last_id"] == events[-1].id


def test_every_tenancy_change_route_records_the_change(sqlite_world: World) -> None:
    """A new route that changes organisations, AE titles or destinations (an update, a
    delete) must call ``record_change`` like the four above, or this fails naming it."""
    changes = []
    for route in sqlite_world.app.routes:
        for ctx in getattr(route, "effective_route_contexts", lambda: [])():
            original = ctx.original_route
            methods = set(ctx.methods or getattr(original, "methods", set()))
            # an organisation's algorithm switches are recorded by radsight.monitor.admission
            tenancy = ctx.path.startswith("/api/organisations") and "/algorithms" not in ctx.path
            if tenancy and methods - {"GET", "HEAD"}:
                changes.append((ctx.path, original.endpoint))
    assert len(changes) >= 4, changes
    forgot = [p for p, fn in changes if "record_change(" not in inspect.getsource(fn)]
    assert not forgot, f"these routes change tenancy and record nothing: {forgot}"


def _failed_job_and_open_alert(w: World) -> tuple[int, int, int]:
    """A dead-lettered job and an open alert of City Hospital: (organisation, job, alert)."""
    with w.rt.db.session() as s:
        org = tenants.get_organisation(s, "City Hospital").id
        job = JobRow(
            organisation_id=org, kind="analyse", dedup_key=f"dead-{generate_uid()}",
            study_id=w.values["study_id"], state="dead", attempts=5, run_after=utcnow(),
            error_code="algorithm_error", created_at=utcnow(),
        )  # fmt: skip
        alert = AlertRow(
            kind="turnaround", key=f"turnaround:{generate_uid()}", organisation_id=org,
            message="slow", detail={}, created_at=utcnow(),
        )  # fmt: skip
        s.add_all([job, alert])
        s.flush()
        return org, job.id, alert.id


def test_thresholds_job_retries_and_alert_resolutions_through_the_api_are_recorded(
    sqlite_world: World,
) -> None:
    w = sqlite_world
    org, job_id, alert_id = _failed_job_and_open_alert(w)
    last = _last_id(w.rt)
    h = {"Authorization": f"Bearer {w.admin_token}"}
    with TestClient(w.app, headers=h, client=("198.51.100.7", 40000)) as c:
        body = {
            "algorithm": "radsight-bright-region@1.0.0",
            "organisation": "City Hospital",
            "value": 0.42,
            "reason": "fewer false positives",
        }
        assert c.post("/api/thresholds", json=body).status_code == 201
        assert c.post(f"/api/jobs/{job_id}/retry").status_code == 200
        assert c.post(f"/api/alerts/{alert_id}/resolve").status_code == 200
        # refused changes record nothing
        assert c.post(f"/api/jobs/{job_id}/retry").status_code == 409
        verify = c.get("/api/audit/verify").json()
    events = _events_after(w.rt, last)
    got = [(e.action, e.actor, e.remote_addr, e.organisation_id) for e in events]
    assert got == [
        ("threshold.set", "ops", "198.51.100.7", org),
        ("job.retry", "ops", "198.51.100.7", org),
        ("alert.resolve", "ops", "198.51.100.7", org),
    ]
    detail = events[0].detail
    assert (detail["algorithm"], detail["finding"], detail["value"], detail["method"]) == (
        "radsight-bright-region@1.0.0", "study", 0.42, "manual",
    )  # fmt: skip
    assert detail["reason"] == "fewer false positives"
    assert events[1].detail == {"job_id": job_id, "kind": "analyse", "was": "dead"}
    assert events[2].detail["alert_id"] == alert_id
    assert verify["ok"] is True


def test_thresholds_and_job_retries_from_the_command_line_are_recorded(
    sqlite_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from radsight.cli.main import cli

    w = sqlite_world
    org, job_id, _alert = _failed_job_and_open_alert(w)
    last = _last_id(w.rt)
    for key in [k for k in __import__("os").environ if k.startswith("RADSIGHT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADSIGHT_DATA_DIR", str(w.rt.settings.data_dir))
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["threshold", "set", "radsight-bright-region@1.0.0", "0.37", "--organisation",
         "City Hospital", "--reason", "calibrated on site"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["retry", str(job_id)])
    assert res.exit_code == 0, res.output
    events = _events_after(w.rt, last)
    assert [(e.action, e.organisation_id) for e in events] == [
        ("threshold.set", org),
        ("job.retry", org),
    ]
    assert all(e.actor.startswith("cli:") for e in events)
    assert events[0].detail["value"] == 0.37 and events[0].detail["reason"] == "calibrated on site"
    assert events[1].detail == {"job_id": job_id, "kind": "analyse", "was": "dead"}
    with w.rt.db.session() as s:
        assert verify_chain(s).ok
