"""The supervisors' dashboard: figures by region, organisation, study type and period;
HTML with charts, JSON and CSV; scoped by role and tenancy."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from radsight import auth
from radsight.store import quality, tenants
from radsight.store.clock import utcnow
from radsight.store.tables import ResultRow, StudyRow

from .conftest import make_org, token


def add_results(
    rt,
    org: int,
    study_type: str,
    verdicts: list[str],
    days_ago: float = 0,
    algorithm: str = "radsight-cxr",
) -> None:  # type: ignore[no-untyped-def]
    when = utcnow() - timedelta(days=days_ago)
    with rt.db.session() as s:
        for i, v in enumerate(verdicts):
            st = StudyRow(
                organisation_id=org,
                study_instance_uid=f"2.25.{org}.{study_type}.{days_ago}.{i}",
                study_type=study_type,
                state="analysed",
                first_received_at=when,
                last_received_at=when,
                ready_at=when + timedelta(seconds=2),
            )
            s.add(st)
            s.flush()
            s.add(
                ResultRow(
                    organisation_id=org,
                    study_id=st.id,
                    algorithm_name=algorithm,
                    algorithm_version="1.0.0",
                    status="analysed",
                    verdict=v,
                    urgent=False,
                    study_score=0.5,
                    created_at=when + timedelta(seconds=5),
                )
            )


def supervisor(rt, org: int, region: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with rt.db.session() as s:
        region_id = tenants.get_or_create_region(s, region).id
        user = auth.create_user(
            s, org, f"sup-{region}", "a long password", "supervisor", region_id=region_id
        )
        _, plain = auth.create_token(s, "sup", "supervisor", org, user_id=user.id)
    return {"Authorization": f"Bearer {plain}"}


def test_dashboard_figures_exports_and_scope(runtime, client_for):
    rt = runtime  # SQLite and PostgreSQL: the period grouping is dialect-specific
    a = make_org(rt, "City Hospital", "North")
    b = make_org(rt, "Town Clinic", "North")
    c = make_org(rt, "Island Hospital", "South")
    add_results(rt, a, "cxr", ["abnormal"] * 3 + ["normal"] * 7)
    add_results(rt, a, "mmg", ["abnormal"] + ["normal"] * 4, algorithm="radsight-mmg")
    add_results(rt, b, "cxr", ["abnormal"] * 2 + ["normal"] * 2, days_ago=40)
    add_results(rt, c, "cxr", ["abnormal"] * 9)
    with rt.db.session() as s:
        ev = quality.create_evaluation(s, "radsight-cxr", "1.0.0", "ref", "qe")
        quality.finish_evaluation(
            s,
            ev.id,
            summary={"auroc": {"value": 0.9, "lower": 0.85, "upper": 0.95, "n": 500}},
            passed=True,
            num_studies=500,
        )
    client = client_for(rt)
    north = supervisor(rt, a, "North")
    data = client.get("/api/dashboard", headers=north).json()
    assert data["organisations"] == ["City Hospital", "Town Clinic"]  # not the South's
    assert data["activity"]["totals"] == {"studies": 19, "flagged": 6, "urgent": 0}
    by_org = {
        r["organisation"]: (r["studies"], r["flagged"]) for r in data["activity"]["by_organisation"]
    }
    assert by_org == {"City Hospital": (15, 4), "Town Clinic": (4, 2)}
    assert {r["study_type"]: r["studies"] for r in data["activity"]["by_study_type"]} == {
        "cxr": 14,
        "mmg": 5,
    }
    assert len(data["activity"]["by_period"]) == 2  # this month and 40 days ago
    assert data["turnaround_s"]["received_to_ready"]["median"] == 2.0
    status = {q["algorithm_name"]: q for q in data["quality"]}
    assert status["radsight-cxr"]["status"] == "ok" and "0.900" in status["radsight-cxr"]["auroc"]
    assert status["radsight-mmg"]["status"] == "not calibrated"
    # a period filter and a finer grain
    since = (utcnow() - timedelta(days=10)).isoformat()
    recent = client.get(f"/api/dashboard?since={since}&period=week", headers=north).json()
    assert recent["activity"]["totals"]["studies"] == 15
    # CSV export
    text = client.get("/api/dashboard.csv", headers=north).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sum(int(r["studies"]) for r in rows) == 19 and {r["region"] for r in rows} == {"North"}
    # the HTML page with its charts
    page = client.get("/dashboard", headers=north)
    assert page.status_code == 200 and "19 studies analysed, 6 with signs flagged" in page.text
    assert page.text.count("data:image/png;base64,") == 2
    # an organisation admin sees their own organisation; a radiologist no dashboard at all
    own = client.get("/api/dashboard", headers=token(rt, "org_admin", c, "c")).json()
    assert own["organisations"] == ["Island Hospital"] and own["activity"]["totals"]["flagged"] == 9
    assert client.get("/dashboard", headers=token(rt, "radiologist", a, "r")).status_code == 403
    assert client.get("/api/dashboard?period=year", headers=north).status_code == 422
