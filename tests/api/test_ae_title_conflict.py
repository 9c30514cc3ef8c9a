"""An AE title taken by another organisation: its admin learns nothing of the owner."""

from __future__ import annotations

from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.pipeline.routing import load_rules
from radsight.store import tenants
from radsight.web import create_app


def test_conflict_names_the_owner_to_platform_admins_only(runtime):
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "Alpha Clinic", "North")
        b = tenants.create_organisation(s, "Bravo Secret Hospital", "South")
        tenants.create_application_entity(s, b.id, "BRAVO_CT")
        tenants.create_application_entity(s, a.id, "ALPHA_CT")
        _t, org_admin = auth.create_token(s, "a-admin", "org_admin", a.id)
        _t, admin = auth.create_token(s, "platform", "admin", None)
    with TestClient(app) as c:
        as_a = {"Authorization": f"Bearer {org_admin}"}
        taken = c.post(
            "/api/organisations/Alpha Clinic/ae-titles", json={"ae_title": "BRAVO_CT"}, headers=as_a
        )
        own = c.post(
            "/api/organisations/Alpha Clinic/ae-titles", json={"ae_title": "ALPHA_CT"}, headers=as_a
        )
        platform = c.post(
            "/api/organisations/Alpha Clinic/ae-titles",
            json={"ae_title": "BRAVO_CT"},
            headers={"Authorization": f"Bearer {admin}"},
        )
    assert taken.status_code == 409 and taken.json()["code"] == "conflict"
    detail = taken.json()["detail"]
    assert "already registered" in detail
    assert "Bravo" not in detail and str(b.id) not in detail.replace("BRAVO_CT", "")
    assert own.status_code == 409 and "Alpha Clinic" in own.json()["detail"]
    assert platform.status_code == 409
    assert "'Bravo Secret Hospital'" in platform.json()["detail"], platform.json()
