"""``/api/algorithms``: who may read and change a version's lifecycle, at which scope, and
what a refusal says (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.monitor.admission import register_installed
from radsight.monitor.service import report_key
from radsight.pipeline.routing import load_rules
from radsight.store import people, quality, tenants
from radsight.store.scope import Scope
from radsight.web import create_app
from tests.cli.test_algorithm_cli import store_evaluation

MMG = "/api/algorithms/radsight-mmg/1.1.0"
BRIGHT = "/api/algorithms/radsight-bright-region/1.0.0"
PASSWORD = "correct horse battery"
OVERRIDE = "reader study at City Hospital, 300 women, signed off by the clinical board"


@dataclass
class World:
    client: TestClient
    #: who -> request headers (and the cookie a signed-in person sends)
    who: dict[str, dict[str, str]]
    cookies: dict[str, str]

    def call(self, who: str, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
        self.client.cookies.clear()
        if who in self.cookies:
            self.client.cookies.set("radsight_session", self.cookies[who])
        return self.client.request(method, path, headers=self.who[who], **kw)


@pytest.fixture
def world(runtime) -> World:  # type: ignore[no-untyped-def]
    registry = Registry.from_entry_points()
    register_installed(runtime, registry)
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))
    who: dict[str, dict[str, str]] = {}
    cookies: dict[str, str] = {}
    with runtime.db.session() as s:
        city = tenants.create_organisation(s, "City Hospital", "North")
        tenants.create_organisation(s, "Town Clinic", "North")
        rural = tenants.create_organisation(s, "Rural Clinic", "South")
        for name, role, org in (
            ("admin", "admin", None),
            ("radiologist", "radiologist", city.id),
            ("org_admin", "org_admin", city.id),
            ("rural org_admin", "org_admin", rural.id),
        ):
            _t, token = auth.create_token(s, name, role, org)
            who[name] = {"Authorization": f"Bearer {token}"}
        for name, org in (("north.sup", city), ("south.sup", rural)):
            user = auth.create_user(
                s, org.id, name, PASSWORD, "supervisor", region_id=org.region_id
            )
            cookie, csrf = auth.create_session(s, user, 3600)
            who[name], cookies[name] = {"X-CSRF-Token": csrf}, cookie
    return World(TestClient(app), who, cookies)


def _state(body: dict, version: str, org: str) -> str:
    [v] = [v for v in body if f"{v['name']}/{v['version']}" == version]
    [o] = [o for o in v["organisations"] if o["organisation"] == org]
    return o["state"]


def test_everyone_reads_the_states_of_their_own_organisations(world):
    r = world.call("radiologist", "GET", "/api/algorithms")
    assert r.status_code == 200
    mmg = next(v for v in r.json() if v["name"] == "radsight-mmg")
    assert mmg["platform_state"] == "shadow" and mmg["installed"] is True
    assert [o["organisation"] for o in mmg["organisations"]] == ["City Hospital"]
    assert mmg["organisations"][0]["mode"] == "shadow"
    assert mmg["evidence"]["passes"] is False and mmg["evidence"]["num_studies"] == 242
    assert "the reference set has 242 studies" in mmg["evidence"]["problems"][0]
    r = world.call("north.sup", "GET", "/api/algorithms")
    mmg = next(v for v in r.json() if v["name"] == "radsight-mmg")
    assert [o["organisation"] for o in mmg["organisations"]] == ["City Hospital", "Town Clinic"]
    d = world.call("north.sup", "GET", MMG).json()
    assert [(h["state"], h["actor"], h["scope"]) for h in d["history"]] == [
        ("shadow", "radsight", "platform")
    ]
    assert d["evaluations"][0]["shipped"] is True and d["rule"]["min_studies"] == 400
    assert world.call("north.sup", "GET", "/api/algorithms/radsight-mmg/9.9").status_code == 404


def test_approval_without_passing_evidence_is_409_with_the_reason(world):
    r = world.call("north.sup", "POST", f"{MMG}/state",
                   json={"state": "approved", "organisation": "City Hospital"})  # fmt: skip
    assert r.status_code == 409 and r.json()["code"] == "admission_refused"
    assert (
        "the reference set has 242 studies; the acceptance rule needs at least 400"
        in (r.json()["detail"])
    )
    r = world.call("north.sup", "POST", f"{MMG}/state",
                   json={"state": "approved", "organisation": "City Hospital",
                         "override": True, "reason": "short"})  # fmt: skip
    assert r.status_code == 409 and "written reason" in r.json()["detail"]


def test_a_supervisor_changes_states_in_their_region_only(world, runtime):
    approve = {"state": "approved", "override": True, "reason": OVERRIDE}
    refusals = [
        ("radiologist", {"organisation": "City Hospital"}, 403),
        ("org_admin", {"organisation": "City Hospital"}, 403),
        ("north.sup", {"organisation": "Rural Clinic"}, 404),  # another tenant: as if absent
        ("north.sup", {"region": "South"}, 403),
        ("north.sup", {}, 403),  # platform-wide: admins only
        ("south.sup", {"organisation": "City Hospital"}, 404),
        ("south.sup", {"region": "North"}, 403),
    ]
    for who, scope, status in refusals:
        r = world.call(who, "POST", f"{MMG}/state", json={**approve, **scope})
        assert (who, scope, r.status_code) == (who, scope, status), r.text
        assert r.headers["content-type"] == "application/problem+json"
    listing = world.call("admin", "GET", "/api/algorithms").json()
    assert {
        _state(listing, "radsight-mmg/1.1.0", o) for o in ("City Hospital", "Rural Clinic")
    } == {"shadow"}
    r = world.call("north.sup", "POST", f"{MMG}/state", json={**approve, "region": "North"})
    assert r.status_code == 200, r.text
    row = r.json()
    assert (row["state"], row["override"], row["actor"], row["reason"]) == (
        "approved",
        True,
        "north.sup",
        OVERRIDE,
    )
    assert row["region_id"] is not None and row["organisation_id"] is None
    trial = {"state": "shadow", "organisation": "City Hospital", "reason": "local trial first"}
    r = world.call("north.sup", "POST", f"{MMG}/state", json=trial)
    assert r.status_code == 200, r.text
    listing = world.call("admin", "GET", "/api/algorithms").json()
    # the organisation's own record wins over the region's, the region's over the platform's
    assert _state(listing, "radsight-mmg/1.1.0", "City Hospital") == "shadow"
    assert _state(listing, "radsight-mmg/1.1.0", "Town Clinic") == "approved"
    assert _state(listing, "radsight-mmg/1.1.0", "Rural Clinic") == "shadow"
    with runtime.db.session() as s:
        [e] = [
            e
            for e in people.list_audit(s, scope=Scope.ALL, action="algorithm.approved")
            if e.actor == "north.sup"
        ]
        assert e.remote_addr == "testclient" and e.detail["reason"] == OVERRIDE
        assert e.detail["override"] is True and e.user_id is not None


def test_platform_admin_suspends_and_withdraws_with_a_reason(world):
    r = world.call("admin", "POST", f"{BRIGHT}/state", json={"state": "suspended"})
    assert r.status_code == 409 and "a written reason" in r.json()["detail"]
    suspend = {"state": "suspended", "reason": "calibration failure on site"}
    r = world.call("admin", "POST", f"{BRIGHT}/state", json=suspend)
    assert r.status_code == 200 and r.json()["organisation_id"] is None
    r = world.call("admin", "POST", f"{BRIGHT}/state",
                   json={"state": "withdrawn", "reason": "replaced by version 2"})  # fmt: skip
    assert r.status_code == 200
    r = world.call("admin", "POST", f"{BRIGHT}/state",
                   json={"state": "approved", "override": True, "reason": OVERRIDE})  # fmt: skip
    assert r.status_code == 409 and "withdrawn is final" in r.json()["detail"]
    r = world.call("admin", "POST", f"{BRIGHT}/state", json={"state": "retired"})
    assert r.status_code == 422
    r = world.call("admin", "POST", "/api/algorithms/radsight-nothing/1.0/state",
                   json={"state": "shadow"})  # fmt: skip
    assert r.status_code == 404


def test_switching_an_algorithm_off_for_an_organisation(world):
    path = "/api/organisations/{}/algorithms/radsight-mmg"
    off = {"enabled": False, "reason": "no mammography service here"}
    assert world.call(
        "radiologist", "POST", path.format("City Hospital"), json=off
    ).status_code == (403)
    assert world.call(
        "rural org_admin", "POST", path.format("City Hospital"), json=off
    ).status_code == (404)
    assert world.call("south.sup", "POST", path.format("Town Clinic"), json=off).status_code == 404
    r = world.call("org_admin", "POST", path.format("City Hospital"), json={"enabled": False})
    assert r.status_code == 422 and "say why" in r.json()["detail"]
    r = world.call("org_admin", "POST", path.format("City Hospital"), json=off)
    assert r.status_code == 200, r.text
    assert (r.json()["enabled"], r.json()["reason"]) == (False, off["reason"])
    r = world.call("north.sup", "POST", path.format("Town Clinic"), json=off)
    assert r.status_code == 200
    listing = world.call("north.sup", "GET", "/api/algorithms").json()
    mmg = next(v for v in listing if v["name"] == "radsight-mmg")
    assert [(o["organisation"], o["switched_off"], o["mode"]) for o in mmg["organisations"]] == [
        ("City Hospital", True, None),
        ("Town Clinic", True, None),
    ]
    r = world.call("admin", "POST", path.format("City Hospital"), json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True
    r = world.call("admin", "POST", "/api/organisations/City Hospital/algorithms/nothing", json=off)
    assert r.status_code == 404


def test_the_routes_are_in_the_openapi_document(world):
    paths = world.call("admin", "GET", "/openapi.json").json()["paths"]
    assert set(paths["/api/algorithms/{algorithm}/{version}/state"]) == {"post"}
    assert (
        "get" in paths["/api/algorithms"]
        and "get" in paths["/api/algorithms/{algorithm}/{version}"]
    )
    assert "post" in paths["/api/organisations/{org}/algorithms/{algorithm}"]


def test_the_dashboard_shows_each_versions_state_and_links_its_evidence(world, runtime):
    rows = {
        a["algorithm_name"]: a
        for a in world.call("north.sup", "GET", "/api/dashboard").json()["admission"]
    }
    bright, mmg = rows["radsight-bright-region"], rows["radsight-mmg"]
    assert (bright["state"], bright["evidence"]["passes"]) == ("approved", True)
    assert (mmg["state"], mmg["evidence"]["passes"], mmg["evidence"]["num_studies"]) == (
        "shadow",
        False,
        242,
    )
    assert mmg["evidence"]["url"] == f"/api/evaluations/{mmg['evidence']['id']}"
    # a passing calibration test with its HTML report; the approval names it
    evaluation = store_evaluation(runtime, "radsight-mmg@1.1.0", 400)
    with runtime.db.session() as s:
        runtime.files.put(report_key(evaluation), b"<html>report</html>")
        quality.get_evaluation(s, evaluation, scope=Scope.ALL).report_key = report_key(evaluation)
    r = world.call("admin", "POST", f"{MMG}/state",
                   json={"state": "approved", "evidence_id": evaluation})  # fmt: skip
    assert r.status_code == 200 and r.json()["override"] is False
    off = {"enabled": False, "reason": "no mammography service here"}
    world.call(
        "north.sup", "POST", "/api/organisations/Town Clinic/algorithms/radsight-mmg", json=off
    )
    mmg = next(
        a
        for a in world.call("north.sup", "GET", "/api/dashboard").json()["admission"]
        if a["algorithm_name"] == "radsight-mmg"
    )
    assert (mmg["state"], mmg["evidence"]["id"], mmg["evidence"]["passes"]) == (
        "approved",
        evaluation,
        True,
    )
    assert mmg["evidence"]["url"] == f"/api/evaluations/{evaluation}/report.html"
    assert mmg["switched_off"] == ["Town Clinic"] and mmg["differs"] == {}
    page = world.call("north.sup", "GET", "/dashboard").text
    assert f'href="/api/evaluations/{evaluation}/report.html">#{evaluation} passes</a>' in page
    assert 'href="/algorithms/radsight-mmg/1.1.0"' in page
    assert world.call("north.sup", "GET", mmg["evidence"]["url"]).text == "<html>report</html>"


def test_the_pages_forms_take_the_same_rules(world):
    """An organisation admin sees the page with switches but no state form; their switch
    form works, a state change they post is refused on the page; a radiologist gets 403."""
    page = world.call("org_admin", "GET", "/algorithms/radsight-mmg/1.1.0")
    assert page.status_code == 200
    assert 'id="state-form"' not in page.text and "Switch off" in page.text
    form = {"organisation": "City Hospital", "enabled": "off", "reason": "no mammography here"}
    r = world.call("org_admin", "POST", "/algorithms/radsight-mmg/1.1.0/switch", data=form,
                   follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    assert r.headers["location"].endswith(
        "?done=radsight-mmg%20is%20switched%20off%20for%20City%20Hospital"
    )
    page = world.call("org_admin", "GET", r.headers["location"]).text
    assert "off: no mammography here" in page
    state = {"state": "approved", "scope": "organisation:City Hospital", "override": "1",
             "reason": OVERRIDE}  # fmt: skip
    r = world.call("org_admin", "POST", "/algorithms/radsight-mmg/1.1.0/state", data=state)
    assert r.status_code == 200 and "needs the role supervisor or admin" in r.text
    r = world.call("radiologist", "POST", "/algorithms/radsight-mmg/1.1.0/state", data=state)
    assert r.status_code == 403
    assert world.call("radiologist", "GET", "/algorithms").status_code == 403
    # a supervisor's form: the scopes offered are their region and its organisations
    page = world.call("north.sup", "GET", "/algorithms/radsight-mmg/1.1.0").text
    offered = [m for m in ("platform", "region:North", "region:South", "organisation:City Hospital",
                           "organisation:Town Clinic", "organisation:Rural Clinic")
               if f'value="{m}"' in page]  # fmt: skip
    assert offered == ["region:North", "organisation:City Hospital", "organisation:Town Clinic"]
