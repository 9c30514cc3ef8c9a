"""Tenancy as a table over every route of the app (walks ``app.routes``, so new routes join).

Organisation B has a study (with a patient name, UIDs, an instance, a result, a job, a
verdict, an alert, a destination), its own operating threshold and a line of audit trail.
Six principals of organisation A (tokens of three roles; a signed-in radiologist,
organisation admin and regional supervisor, with cookie and CSRF token) call every route
with B's ids in the path; each must refuse (404 or 403; 401 or a redirect to sign-in for a
credential kind the route does not take) and no answer may carry B's identifiers. Without
credentials every route but the public ones refuses.

A route whose path parameter is not in :data:`PARAMS` fails the test: add how to fill it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from pydicom.uid import generate_uid
from sqlalchemy import select

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.dicom.uids import PREFIX
from radsight.ingest.accept import accept_instance
from radsight.pipeline.routing import parse_rules
from radsight.store import admission as admissionstore
from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import (
    AlertRow,
    AuditEventRow,
    EvaluationRow,
    InstanceRow,
    JobRow,
    ResultObjectRow,
    ResultRow,
    ThresholdRow,
    VerdictRow,
)
from radsight.web import create_app

#: answer without credentials: the health check, the API docs, the sign-in page, files
PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/signin"}
#: "/" only redirects (to the worklist or the sign-in page) and shows nothing
PUBLIC |= {"/"}
#: single sign-on is how one gets credentials (404 while no OIDC provider is set)
PUBLIC |= {"/auth/oidc/login", "/auth/oidc/callback", "/auth/oidc/signed-out"}
#: a write that lands in the caller's own organisation whatever the path says (STOW-RS)
OWN_ORGANISATION_WRITES = {("POST", "/dicomweb/studies/{study}")}
#: signing out would end the session the rest of the table uses
SKIP_FOR_SIGNED_IN = {("POST", "/signout")}
B_PATIENT = "Bravo^Secretpatient"
B_ACCESSION = "ACC-BRAVO-77"
#: the reason B's organisation admin gave for B's own threshold (GET /api/thresholds)
B_THRESHOLD_REASON = "bravo-lowered-for-its-screening-programme"
#: a line of B's audit trail (GET /api/audit, the audit page)
B_AUDIT_NOTE = "bravo-audit-note"
#: why B's supervisor suspended an algorithm for B, and switched another off for B
B_STATE_REASON = "bravo-suspended-after-its-local-audit"
B_SWITCH_REASON = "bravo-has-no-mammography-service"


@dataclass
class World:
    app: FastAPI
    client: TestClient
    b: dict[str, Any]
    #: strings that must never reach organisation A
    secrets: list[str]
    credentials: dict[str, dict[str, str]]
    cookies: dict[str, dict[str, str]]


#: path parameter -> (key in World.b, whether the object belongs to organisation B)
PARAMS: dict[str, tuple[str, bool]] = {
    "org": ("org_name", True),
    "name": ("destination", True),
    "ae_title": ("ae_title", True),
    "username": ("username", True),
    "study_id": ("study_id", True),
    "result_id": ("result_id", True),
    "job_id": ("job_id", True),
    "verdict_id": ("verdict_id", True),
    "alert_id": ("alert_id", True),
    "index": ("zero", True),
    "study": ("study_uid", True),
    "series": ("series_uid", True),
    "instance": ("sop_uid", True),
    "frames": ("one", True),
    "frame": ("one", True),
    "tag": ("pixel_tag", True),
    "instance_id": ("instance_id", True),
    "frame_index": ("zero", True),
    # quality evaluations are the platform's, not a tenant's (calibration on reference sets)
    "evaluation_id": ("evaluation_id", False),
    # algorithm versions are the platform's; their organisations' states are scoped
    "algorithm": ("algorithm", False),
    "version": ("algorithm_version", False),
}

#: required query parameter -> a value that lets the request reach its handler
QUERY: dict[str, str] = {
    "algorithm": "radsight-bright-region",
    "version": "1.0.0",
    "from_version": "1.0.0",
}


def _query(path: str, route: APIRoute) -> dict[str, str]:
    params = {}
    for param in route.dependant.query_params:
        if param.field_info.is_required():
            if param.name not in QUERY:
                pytest.fail(f"{path}: add the query parameter {param.name!r} to QUERY")
            params[param.alias] = QUERY[param.name]
    return params


def _rules(registry: Registry):  # type: ignore[no-untyped-def]
    text = (
        'version: "t"\nrules:\n  - name: all\n    match: {}\n'
        "    algorithms: [radsight-bright-region]\n"
    )
    return parse_rules(text, source="tenancy-test", known_algorithms=registry.refs())


@pytest.fixture
def world(runtime) -> World:  # type: ignore[no-untyped-def]
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, _rules(registry))
    now = utcnow()
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "Alpha Clinic", "North")
        b = tenants.create_organisation(s, "Bravo Hospital", "South")
        tenants.create_application_entity(s, b.id, "BRAVO_CT")
        tenants.create_destination(s, b.id, "bravo-pacs", "BRAVO_PACS", "10.0.0.2", 104)
        user_a = auth.create_user(s, a.id, "alice", "alice-password-1", "radiologist")
        user_b = auth.create_user(s, b.id, "bob", "bob-password-12", "radiologist")
        _t, token_a = auth.create_token(s, "a-viewer", "radiologist", a.id)
        _t, token_a_admin = auth.create_token(s, "a-admin", "org_admin", a.id)
        _t, token_a_super = auth.create_token(s, "a-supervisor", "supervisor", a.id)
        cookie, csrf = auth.create_session(s, user_a, 3600)
        # an organisation admin and a regional supervisor of A's region, signed in
        admin_a = auth.create_user(s, a.id, "amber", "amber-password-1", "org_admin")
        super_a = auth.create_user(
            s, a.id, "arne", "arne-password-1", "supervisor", region_id=a.region_id
        )
        admin_cookie, admin_csrf = auth.create_session(s, admin_a, 3600)
        super_cookie, super_csrf = auth.create_session(s, super_a, 3600)
        a_id, b_id, b_user = a.id, b.id, user_b.id
    ds = make_radiograph(study_instance_uid=generate_uid(prefix=PREFIX), patient_id="PID-BRAVO")
    ds.PatientName = B_PATIENT
    ds.AccessionNumber = B_ACCESSION
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accepted = accept_instance(runtime, buf.getvalue(), organisation_id=b_id)
    with runtime.db.session() as s:
        inst = s.query(InstanceRow).filter_by(sop_instance_uid=ds.SOPInstanceUID).one()
        instance_id = inst.id
        result = ResultRow(
            organisation_id=b_id,
            study_id=accepted.study_id,
            algorithm_name="radsight-bright-region",
            algorithm_version="1.0.0",
            status="analysed",
            study_score=0.9,
            verdict="abnormal",
            report={},
            objects=[
                ResultObjectRow(
                    position=0,
                    role="sr",
                    sop_class_uid=inst.sop_class_uid,
                    series_instance_uid="1.2.3",
                    sop_instance_uid=inst.sop_instance_uid,
                    storage_key=inst.storage_key,
                )
            ],
            created_at=now,
        )
        s.add(result)
        s.flush()
        job = JobRow(
            organisation_id=b_id,
            kind="analyse",
            dedup_key=f"tenancy-{accepted.study_id}",
            study_id=accepted.study_id,
            algorithm_name="radsight-bright-region",
            algorithm_version="1.0.0",
            payload={},
            state="dead",
            run_after=now,
            created_at=now,
        )
        verdict = VerdictRow(
            organisation_id=b_id,
            study_id=accepted.study_id,
            result_id=result.id,
            user_id=b_user,
            kind="study",
            value="abnormal",
            created_at=now,
        )
        alert = AlertRow(
            kind="clinical", key="bravo-alert", organisation_id=b_id, message="m", created_at=now
        )
        evaluation = EvaluationRow(
            algorithm_name="radsight-bright-region",
            algorithm_version="1.0.0",
            reference_name="reference",
            created_at=now,
        )
        threshold = ThresholdRow(
            algorithm_name="radsight-bright-region",
            algorithm_version="1.0.0",
            organisation_id=b_id,
            value=0.2,
            method="manual",
            reason=B_THRESHOLD_REASON,
            created_by="bravo-admin",
            created_at=now,
        )
        default_threshold = ThresholdRow(
            algorithm_name="radsight-bright-region",
            algorithm_version="1.0.0",
            organisation_id=None,
            value=0.6,
            method="manual",
            reason="platform default",
            created_by="ops",
            created_at=now,
        )
        audit = AuditEventRow(
            organisation_id=b_id,
            user_id=b_user,
            actor="bob",
            action="study.open",
            study_id=accepted.study_id,
            detail={"note": B_AUDIT_NOTE},
            created_at=now,
        )
        s.add_all([job, verdict, alert, evaluation, threshold, default_threshold, audit])
        s.flush()
        admissionstore.record_state(
            s, "radsight-bright-region", "1.0.0", "approved", reason="platform", actor="ops"
        )
        admissionstore.record_state(
            s,
            "radsight-bright-region",
            "1.0.0",
            "suspended",
            organisation_id=b_id,
            reason=B_STATE_REASON,
            actor="bravo-supervisor",
        )
        admissionstore.set_switch(s, b_id, "radsight-mmg", False, reason=B_SWITCH_REASON)
        ids = {
            "result_id": result.id,
            "job_id": job.id,
            "verdict_id": verdict.id,
            "alert_id": alert.id,
            "evaluation_id": evaluation.id,
        }
    # a crash is a 500 here, not an exception: the table reports every route at once
    client = TestClient(app, follow_redirects=False, raise_server_exceptions=False)
    assert a_id != b_id
    return World(
        app=app,
        client=client,
        b={
            "org_name": "Bravo Hospital",
            "org_id": b_id,
            "destination": "bravo-pacs",
            "ae_title": "BRAVO_CT",
            "username": "bob",
            "study_id": accepted.study_id,
            "zero": 0,
            "one": 1,
            "study_uid": ds.StudyInstanceUID,
            "series_uid": ds.SeriesInstanceUID,
            "sop_uid": ds.SOPInstanceUID,
            "pixel_tag": "7FE00010",
            "algorithm": "radsight-bright-region",
            "algorithm_version": "1.0.0",
            "instance_id": instance_id,
            **ids,
        },
        secrets=[
            ds.StudyInstanceUID,
            ds.SOPInstanceUID,
            "Secretpatient",
            B_ACCESSION,
            "PID-BRAVO",
            B_THRESHOLD_REASON,
            B_AUDIT_NOTE,
            B_STATE_REASON,
            B_SWITCH_REASON,
        ],
        credentials={
            "token": {"Authorization": f"Bearer {token_a}"},
            "org_admin token": {"Authorization": f"Bearer {token_a_admin}"},
            "supervisor token": {"Authorization": f"Bearer {token_a_super}"},
            "signed-in user": {"X-CSRF-Token": csrf},
            "signed-in org_admin": {"X-CSRF-Token": admin_csrf},
            "signed-in regional supervisor": {"X-CSRF-Token": super_csrf},
        },
        cookies={
            "signed-in user": {"radsight_session": cookie},
            "signed-in org_admin": {"radsight_session": admin_cookie},
            "signed-in regional supervisor": {"radsight_session": super_cookie},
        },
    )


def _routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    """(method, full path, route) of every API route, included routers flattened."""
    found: list[tuple[str, set[str], APIRoute]] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found.append((route.path, route.methods, route))
        elif hasattr(route, "effective_route_contexts"):  # FastAPI's included routers
            for ctx in route.effective_route_contexts():
                if isinstance(ctx.original_route, APIRoute):
                    methods = ctx.methods or ctx.original_route.methods
                    found.append((ctx.path, methods, ctx.original_route))
    out = []
    for path, methods, api_route in found:
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            out.append((method, path, api_route))
    return out


def _fill(path: str, b: dict[str, Any]) -> tuple[str, list[bool]]:
    owned: list[bool] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        if name not in PARAMS:
            pytest.fail(f"{path}: add the path parameter {name!r} to PARAMS in {__file__}")
        key, is_tenant_data = PARAMS[name]
        owned.append(is_tenant_data)
        return str(b[key])

    return re.sub(r"\{([^}]+)\}", value, path), owned


def _example(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A value that passes a JSON schema (enough for a request to reach its handler)."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].split("/")[-1]], components)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return _example(options[0], components)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _example(v, components) for k, v in props.items()}
    if kind == "array":
        return [_example(schema.get("items", {}), components)]
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return "x" * max(1, schema.get("minLength", 1))


def _request_kwargs(app: FastAPI, method: str, path: str, route: APIRoute) -> dict[str, Any]:
    """A body and query that pass validation, so that the request reaches the handler."""
    kwargs: dict[str, Any] = {"params": _query(path, route)}
    return {**kwargs, **_body_kwargs(app, method, path, route)}


def _body_kwargs(app: FastAPI, method: str, path: str, route: APIRoute) -> dict[str, Any]:
    spec = app.openapi()
    op = spec["paths"].get(path, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    components = spec.get("components", {}).get("schemas", {})
    if "application/json" in content:
        return {"json": _example(content["application/json"]["schema"], components)}
    for form in ("application/x-www-form-urlencoded", "multipart/form-data"):
        if form in content:
            data = _example(content[form]["schema"], components)
            return {"data": {k: str(v) for k, v in data.items()}}
    if route.dependant.body_params:  # a route left out of the schema (web pages)
        data = {}
        for param in route.dependant.body_params:
            schema = TypeAdapter(param.field_info.annotation).json_schema()
            data[param.alias] = str(_example(schema, schema.get("$defs", {})))
        return {"data": data}
    return {}


def _refused(response: Any) -> bool:
    if response.status_code in (401, 403, 404):
        return True
    location = response.headers.get("location", "")
    return 300 <= response.status_code < 400 and "signin" in location


def test_every_route_needs_credentials(world: World) -> None:
    open_routes = []
    for method, path, route in _routes(world.app):
        if path in PUBLIC:
            continue
        url, _owned = _fill(path, world.b)
        response = world.client.request(
            method, url, **_request_kwargs(world.app, method, path, route)
        )
        if not (response.status_code == 401 or _refused(response) and response.status_code != 404):
            open_routes.append(f"{method} {path} -> {response.status_code}")
    assert open_routes == [], "routes that answer without credentials"


#: six principals of organisation A, each of a kind the API tells apart
PRINCIPALS_OF_A = [
    "token",
    "org_admin token",
    "supervisor token",
    "signed-in user",
    "signed-in org_admin",
    "signed-in regional supervisor",
]


@pytest.mark.parametrize("who", PRINCIPALS_OF_A)
def test_organisation_a_never_sees_organisation_b(world: World, who: str) -> None:
    client = world.client
    client.cookies.clear()
    for name, value in world.cookies.get(who, {}).items():
        client.cookies.set(name, value)
    headers = world.credentials[who]
    leaks, not_refused, unreached, checked = [], [], [], 0
    for method, path, route in _routes(world.app):
        if path in PUBLIC or (who.startswith("signed-in") and (method, path) in SKIP_FOR_SIGNED_IN):
            continue
        url, owned = _fill(path, world.b)
        kwargs = _request_kwargs(world.app, method, path, route)
        response = client.request(method, url, headers=headers, **kwargs)
        checked += 1
        if method == "GET" and "urn:radsight:error:validation_error" in response.text:
            unreached.append(f"GET {url} -> 422: {response.text[:120]}")
        body = response.text
        # an error may echo the caller's own URL back; anything else of B's is a leak
        leaked = [s for s in world.secrets if s in body and s not in url]
        if leaked:
            leaks.append(f"{method} {path} -> {response.status_code} shows {leaked}")
        if any(owned) and (method, path) not in OWN_ORGANISATION_WRITES and not _refused(response):
            not_refused.append(f"{method} {url} -> {response.status_code}: {body[:120]}")
        # a list narrowed to organisation B by name is refused too
        if method == "GET" and not owned and _takes_query(route, "organisation"):
            query = {**_query(path, route), "organisation": world.b["org_name"]}
            r = client.get(url, params=query, headers=headers)
            if not _refused(r):
                not_refused.append(f"GET {path}?organisation=B -> {r.status_code}")
            if any(s in r.text for s in world.secrets):
                leaks.append(f"GET {path}?organisation=B shows B's data")
    assert leaks == []
    assert not_refused == [], "\n".join(not_refused)
    assert unreached == [], "requests that never reached their handler"
    assert checked > 40  # the table really walked the app


def _takes_query(route: APIRoute, name: str) -> bool:
    return any(p.name == name for p in route.dependant.query_params)


def test_the_same_routes_answer_organisation_b(world: World, runtime) -> None:  # type: ignore[no-untyped-def]
    """The refusals above are tenancy, not broken routes: B's own token gets B's study."""
    with runtime.db.session() as s:
        _t, token_b = auth.create_token(s, "b-viewer", "radiologist", world.b["org_id"])
    headers = {"Authorization": f"Bearer {token_b}"}
    b = world.b
    for path in (
        f"/api/studies/{b['study_id']}",
        f"/api/results/{b['result_id']}",
        f"/api/jobs/{b['job_id']}",
        f"/dicomweb/studies/{b['study_uid']}/metadata",
        f"/dicomweb/studies/{b['study_uid']}/series/{b['series_uid']}/instances/"
        f"{b['sop_uid']}/frames/1",
    ):
        response = world.client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text[:200])
    studies = world.client.get("/dicomweb/studies", headers=headers).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [b["study_uid"]]
    # thresholds: each organisation sees the platform default and its own rows, newest first
    rows = world.client.get("/api/thresholds", headers=headers).json()
    assert [r["reason"] for r in rows] == ["platform default", B_THRESHOLD_REASON]
    rows = world.client.get("/api/thresholds", headers=world.credentials["token"]).json()
    assert [(r["reason"], r["organisation_id"]) for r in rows] == [("platform default", None)]


def test_who_may_manage_an_organisation(world: World, runtime) -> None:  # type: ignore[no-untyped-def]
    """Platform admins create organisations; an org_admin manages its own AE titles."""
    with runtime.db.session() as s:
        _t, admin = auth.create_token(s, "ops", "admin", None)
    client, cred = world.client, world.credentials
    ae = {"ae_title": "ALPHA_CR"}
    r = client.post(
        "/api/organisations", json={"name": "N", "region": "R"}, headers=cred["org_admin token"]
    )
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = client.post("/api/organisations/Alpha Clinic/ae-titles", json=ae, headers=cred["token"])
    assert r.status_code == 403 and "org_admin" in r.json()["detail"]
    r = client.post(
        "/api/organisations/Alpha Clinic/ae-titles", json=ae, headers=cred["org_admin token"]
    )
    assert r.status_code == 201 and r.json()["ae_title"] == "ALPHA_CR"
    dest = {"name": "pacs", "ae_title": "PACS", "host": "10.0.0.9", "port": 104}
    r = client.post(
        "/api/organisations/Bravo Hospital/destinations", json=dest, headers=cred["org_admin token"]
    )
    assert r.status_code == 404
    admin_h = {"Authorization": f"Bearer {admin}"}
    r = client.post("/api/organisations", json={"name": "Charlie", "region": "R"}, headers=admin_h)
    assert r.status_code == 201
    names = [o["name"] for o in client.get("/api/organisations", headers=cred["token"]).json()]
    assert names == ["Alpha Clinic"]
    assert len(client.get("/api/organisations", headers=admin_h).json()) == 3
    r = client.post(f"/api/jobs/{world.b['job_id']}/retry", headers=admin_h)
    assert r.status_code == 200 and r.json()["state"] == "queued"


def test_an_org_admin_sends_results_over_dicom_tls(world: World, runtime) -> None:  # type: ignore[no-untyped-def]
    """A destination is created for TLS, its certificate name changed, TLS switched off:
    each change is listed and in the audit trail with what changed."""
    client, h = world.client, world.credentials["org_admin token"]
    path = "/api/organisations/Alpha Clinic/destinations"
    dest = {"name": "pacs", "ae_title": "PACS", "host": "10.0.0.9", "port": 2762, "tls": True}
    r = client.post(path, json=dest, headers=h)
    assert r.status_code == 201
    assert (r.json()["tls"], r.json()["tls_server_name"]) == (True, "")
    r = client.patch(f"{path}/pacs", json={"tls_server_name": "pacs.alpha.example"}, headers=h)
    assert r.status_code == 200
    assert (r.json()["tls"], r.json()["tls_server_name"], r.json()["enabled"]) == (
        True,
        "pacs.alpha.example",
        True,
    )
    r = client.patch(f"{path}/pacs", json={"tls_server_name": "two words"}, headers=h)
    assert r.status_code == 422 and "TLS server name" in r.json()["detail"]
    r = client.patch(f"{path}/pacs", json={"tls": False}, headers=h)
    assert r.status_code == 200 and r.json()["tls"] is False
    (listed,) = client.get(path, headers=h).json()
    assert (listed["tls"], listed["tls_server_name"]) == (False, "pacs.alpha.example")
    with runtime.db.session() as s:
        events = s.scalars(
            select(AuditEventRow)
            .where(AuditEventRow.action.like("destination.%"))
            .order_by(AuditEventRow.id)
        ).all()
        details = [(e.action, e.detail) for e in events]
    assert details[-3:] == [
        (
            "destination.create",
            {
                "name": "pacs",
                "ae_title": "PACS",
                "host": "10.0.0.9",
                "port": 2762,
                "tls": True,
                "tls_server_name": "",
            },
        ),
        ("destination.update", {"name": "pacs", "tls_server_name": "pacs.alpha.example"}),
        ("destination.update", {"name": "pacs", "tls": False}),
    ]


@pytest.mark.parametrize("who", PRINCIPALS_OF_A)
def test_no_principal_of_a_changes_an_algorithm_for_b(world: World, runtime, who: str) -> None:  # type: ignore[no-untyped-def]
    """B is in another region: no principal of A (a regional supervisor included) changes a
    version's state for B or B's region, or switches B's algorithms, by API or page."""
    client = world.client
    client.cookies.clear()
    for name, value in world.cookies.get(who, {}).items():
        client.cookies.set(name, value)
    headers = world.credentials[who]
    reason = "an attempt from another region"
    changes = [
        ("approved", {"organisation": "Bravo Hospital", "override": True}),
        ("withdrawn", {"organisation": str(world.b["org_id"])}),
        ("withdrawn", {"region": "South"}),
        ("withdrawn", {}),  # platform-wide: a platform admin's alone
    ]
    for state, scope in changes:
        body = {"state": state, "reason": reason, **scope}
        r = client.post(
            "/api/algorithms/radsight-bright-region/1.0.0/state", json=body, headers=headers
        )
        assert r.status_code in (403, 404), (who, body, r.status_code, r.text)
        assert B_STATE_REASON not in r.text
    r = client.post(
        "/api/organisations/Bravo Hospital/algorithms/radsight-mmg",
        json={"enabled": True, "reason": reason},
        headers=headers,
    )
    assert r.status_code == 404, r.text
    with runtime.db.session() as s:
        state, row = admissionstore.state_for(
            s, "radsight-bright-region", "1.0.0", world.b["org_id"]
        )
        assert (state, row.reason if row else None) == ("suspended", B_STATE_REASON)
        assert "radsight-mmg" in admissionstore.switched_off(s, world.b["org_id"])
        assert [r.state for r in admissionstore.state_history(s, scope=Scope.ALL)] == [
            "approved",
            "suspended",
        ]
