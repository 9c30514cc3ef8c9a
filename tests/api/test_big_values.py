"""Ids above 2^63 and oversized QIDO queries are the caller's mistake: 4xx, never 500."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.pipeline.routing import load_rules
from radsight.web import create_app
from tests.api.test_tenancy import _routes

HUGE = "99999999999999999999"  # > 2^64


@pytest.fixture
def client(runtime):  # type: ignore[no-untyped-def]
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        _row, token = auth.create_token(s, "tests", "admin", None)
    with TestClient(
        app, headers={"Authorization": f"Bearer {token}"}, raise_server_exceptions=False
    ) as c:
        yield c


def _int_params(route: APIRoute, where: str) -> list[str]:
    params = route.dependant.path_params if where == "path" else route.dependant.query_params
    return [p.alias for p in params if p.field_info.annotation in (int, int | None)]


def test_api_ids_above_2_63_are_not_found_or_invalid(client):
    tried = []
    for method, path, route in _routes(client.app):
        ints = _int_params(route, "path")
        queries = _int_params(route, "query")
        if method != "GET" or not (ints or queries):
            continue
        url = re.sub(
            r"\{([^}:]+)(:[^}]*)?\}",
            lambda m, ints=ints: HUGE if m.group(1) in ints else "1",
            path,
        )
        r = client.get(url, params=dict.fromkeys(queries, HUGE))
        tried.append((url, r.status_code))
        assert r.status_code in (400, 404, 422), (url, r.status_code, r.text[:300])
    assert len(tried) >= 5, tried
    r = client.get(f"/api/studies/{HUGE}")
    assert r.status_code in (404, 422) and r.json()["code"] in ("not_found", "validation_error")


def _uids(n: int) -> str:
    return ",".join(f"1.2.826.0.1.3680043.8.498.{i}" for i in range(1, n + 1))


@pytest.mark.parametrize(
    "query",
    [
        {"StudyInstanceUID": _uids(1000)},
        {"ModalitiesInStudy": ",".join(["CT"] * 1000)},
        {"PatientName": "A" * 10_000},
        {"PatientID": "1" * 10_000},
        {"StudyDescription": "*" + "x*" * 5000},
        {"AccessionNumber": "?" * 10_000},
    ],
    ids=["1000 uids", "1000 modalities", "long name", "long id", "many wildcards", "many ?"],
)
def test_oversized_qido_queries_are_refused(client, query):
    for path in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"):
        r = client.get(path, params=query, headers={"Accept": "application/dicom+json"})
        assert r.status_code == 422, (path, r.status_code, r.text[:300])
        assert "max_query_values" in r.text or "characters" in r.text, r.text
