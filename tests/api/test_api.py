"""The JSON API: tenancy management, studies, jobs, results; errors as problem+json."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.pipeline.routing import load_rules
from radsight.web import create_app


@pytest.fixture
def client(runtime):  # type: ignore[no-untyped-def]
    """A client with a platform admin token (what ``radsight token add --role admin`` makes)."""
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        _row, token = auth.create_token(s, "tests", "admin", None)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_routes_need_a_token(client):
    anonymous = {"Authorization": ""}
    r = client.get("/api/studies", headers=anonymous)
    assert r.status_code == 401 and r.json()["code"] == "not_authenticated"
    r = client.get("/api/studies", headers={"Authorization": "Bearer rst_not-a-token"})
    assert r.status_code == 401 and r.json()["detail"] == "unknown token"
    assert client.get("/health", headers=anonymous).status_code == 200


def test_health_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["rules_version"]
    assert health["ae_title"] == "RADSIGHT" and health["version"]
    spec = client.get("/openapi.json").json()
    assert "/api/organisations" in spec["paths"] and "/api/jobs/{job_id}/retry" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_health_without_credentials_says_only_up(client, runtime):
    """Issue 16, finding 7: /health told anyone the version, AE title, port and job counts."""
    r = client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = client.get("/health", headers={"Authorization": "Bearer rst_not-a-token"})
    assert r.status_code == 401 and "version" not in r.text
    runtime.settings = runtime.settings.model_copy(
        update={"metrics_token": SecretStr("scrape-secret")}
    )
    r = client.get("/health", headers={"Authorization": "Bearer scrape-secret"})
    assert r.status_code == 200 and set(r.json()) >= {"version", "dicom_port", "jobs"}


def test_tenancy_through_the_api(client):
    r = client.post("/api/organisations", json={"name": "City Hospital", "region": "North"})
    assert r.status_code == 201 and r.json()["region"] == "North"
    r = client.post("/api/organisations/City Hospital/ae-titles", json={"ae_title": "CT1"})
    assert r.status_code == 201 and r.json()["ae_title"] == "CT1"
    r = client.post(
        "/api/organisations/City Hospital/destinations",
        json={"name": "pacs", "ae_title": "PACS", "host": "pacs.local", "port": 104},
    )
    assert r.status_code == 201
    assert [d["name"] for d in client.get("/api/organisations/1/destinations").json()] == ["pacs"]
    assert client.get("/api/organisations").json()[0]["name"] == "City Hospital"


def test_ae_title_allowed_hosts_and_tls_subject_through_the_api(client):
    client.post("/api/organisations", json={"name": "City Hospital", "region": "North"})
    r = client.post(
        "/api/organisations/City Hospital/ae-titles",
        json={"ae_title": "CT1", "allowed_hosts": ["10.1.2.3", "10.9.0.0/16"]},
    )
    assert r.status_code == 201 and r.json()["allowed_hosts"] == ["10.1.2.3", "10.9.0.0/16"]
    r = client.patch(
        "/api/organisations/City Hospital/ae-titles/CT1",
        json={"allowed_hosts": [], "tls_client_subject": "CN=CT1,O=City Hospital"},
    )
    assert r.status_code == 200
    assert (r.json()["allowed_hosts"], r.json()["tls_client_subject"]) == (
        [],
        "CN=CT1,O=City Hospital",
    )
    r = client.patch(
        "/api/organisations/City Hospital/ae-titles/CT1", json={"allowed_hosts": ["10.1.2.300"]}
    )
    assert r.status_code == 422 and "10.1.2.300" in r.json()["detail"]
    r = client.patch("/api/organisations/City Hospital/ae-titles/NOPE", json={})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("get", "/api/studies/999", None, 404, "not_found"),
        ("get", "/api/jobs/999", None, 404, "not_found"),
        ("get", "/api/results/999", None, 404, "not_found"),
        ("get", "/api/organisations/Nowhere/destinations", None, 404, "not_found"),
        ("post", "/api/organisations", {"name": "A", "region": "R"}, 409, "conflict"),
        ("post", "/api/organisations", {"name": ""}, 422, "validation_error"),
        ("post", "/api/organisations/A/ae-titles", {"ae_title": "BAD\\AE"}, 422, "invalid_input"),
        (
            "post",
            "/api/organisations/A/destinations",
            {"name": "d", "ae_title": "X", "host": "h", "port": 0},
            422,
            "validation_error",
        ),
        ("get", "/api/studies?limit=0", None, 422, "validation_error"),
    ],
)
def test_errors_are_problem_json(client, method, path, body, status, code):
    client.post("/api/organisations", json={"name": "A", "region": "R"})
    r = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == code and problem["status"] == status and problem["detail"]


def test_studies_and_instances_are_listed(client, runtime):
    client.post("/api/organisations", json={"name": "A", "region": "R"})
    buf = io.BytesIO()
    ds = make_radiograph()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(runtime, buf.getvalue(), organisation_id=1)
    (study,) = client.get("/api/studies").json()
    assert study["study_instance_uid"] == ds.StudyInstanceUID and study["state"] == "receiving"
    detail = client.get(f"/api/studies/{study['id']}").json()
    assert [i["sop_instance_uid"] for i in detail["instances"]] == [ds.SOPInstanceUID]
    assert (
        client.get("/api/studies", params={"organisation": "A", "state": "analysed"}).json() == []
    )


def test_algorithms_are_described(client):
    algos = {a["name"]: a for a in client.get("/api/algorithms").json()}
    bright = algos["radsight-bright-region"]
    assert bright["findings"][0]["threshold"] == 0.5
    assert "cxr" in bright["study_types"]
