"""Clinical monitoring from radiologists' verdicts given through the API."""

from __future__ import annotations

from radsight import auth
from radsight.monitor.checks import clinical_report, run_checks
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow, StudyRow

from .conftest import make_org, token


def results(rt, org: int, ai_verdicts: list[str], start: int = 0) -> list[int]:  # type: ignore[no-untyped-def]
    """Analysed studies with the AI verdicts given (the pipeline is tested elsewhere)."""
    now = utcnow()
    ids = []
    with rt.db.session() as s:
        for i, verdict in enumerate(ai_verdicts, start=start):
            st = StudyRow(
                organisation_id=org,
                study_instance_uid=f"2.25.9.{org}.{i}",
                study_type="cxr",
                state="analysed",
                first_received_at=now,
                last_received_at=now,
                ready_at=now,
            )
            s.add(st)
            s.flush()
            s.add(
                ResultRow(
                    organisation_id=org,
                    study_id=st.id,
                    algorithm_name="radsight-cxr",
                    algorithm_version="1.0.0",
                    status="analysed",
                    verdict=verdict,
                    study_score=0.9 if verdict == "abnormal" else 0.1,
                    created_at=now,
                    report={"findings": [{"key": "pneumonia", "positive": verdict == "abnormal"}]},
                )
            )
            ids.append(st.id)
    return ids


def radiologist(rt, org: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with rt.db.session() as s:
        user = auth.create_user(s, org, f"rad{org}", "a long password", "radiologist")
        _, plain = auth.create_token(s, "rad", "radiologist", org, user_id=user.id)
    return {"Authorization": f"Bearer {plain}"}


def judge(client, h, study_ids: list[int], value: str) -> None:  # type: ignore[no-untyped-def]
    for sid in study_ids:
        r = client.post(
            f"/api/studies/{sid}/verdicts", json={"kind": "study", "value": value}, headers=h
        )
        assert r.status_code == 201, r.text


def test_figures_and_an_alert_only_when_the_evidence_is_conclusive(rt, client_for):
    org = make_org(rt)
    client = client_for(rt)
    h = radiologist(rt, org)
    # 5 diseased studies, the AI found 3; 20 healthy, the AI called all normal
    sick = results(rt, org, ["abnormal"] * 3 + ["normal"] * 2)
    healthy = results(rt, org, ["normal"] * 20, start=100)
    judge(client, h, sick, "abnormal")
    judge(client, h, healthy, "normal")
    judge(client, h, healthy[:1], "normal")  # a repeated verdict supersedes, not doubles
    rep = client.get("/api/monitoring/clinical", headers=h).json()
    (g,) = rep["groups"]
    assert (g["tp"], g["fn"], g["tn"], g["fp"]) == (3, 2, 20, 0) and g["studies"] == 25
    assert g["sensitivity"]["value"] == 0.6 and g["sensitivity"]["upper"] > 0.8
    assert g["specificity"]["value"] == 1.0 and g["agreement"]["value"] == 0.92
    assert g["below_bar"] == []  # 3 of 5 is below 0.80, but 5 cases cannot show it
    assert [a for a in run_checks(rt)["raised"] if a["kind"] == "clinical"] == []
    # 45 more diseased studies at the same rate: now the interval lies under the bar
    more = results(rt, org, ["abnormal"] * 27 + ["normal"] * 18, start=200)
    judge(client, h, more, "abnormal")
    rep = clinical_report(rt, Scope.ALL)
    (g,) = rep["groups"]
    assert (g["tp"], g["fn"]) == (30, 20) and g["sensitivity"]["upper"] < 0.8
    assert g["below_bar"] == ["sensitivity"]
    raised = [a for a in run_checks(rt)["raised"] if a["kind"] == "clinical"]
    assert len(raised) == 1 and raised[0]["message"].startswith("sensitivity 0.600")
    # the radiologist changes their mind on 20 studies: the AI was right after all
    judge(client, h, more[27:], "normal")
    judge(client, h, sick[3:], "normal")
    (g,) = clinical_report(rt, Scope.ALL)["groups"]
    assert (g["tp"], g["fn"], g["tn"]) == (30, 0, 40)
    assert run_checks(rt)["resolved"] == 1


def test_grouping_by_study_type_and_period_and_tenancy(rt, client_for):
    a, b = make_org(rt), make_org(rt, "Rural Clinic", "South")
    client = client_for(rt)
    for org in (a, b):
        h = radiologist(rt, org)
        judge(client, h, results(rt, org, ["abnormal", "normal"]), "abnormal")
        finding = client.post(
            f"/api/studies/{results(rt, org, ['abnormal'], 50)[0]}/verdicts",
            json={"kind": "finding", "value": "agree", "finding_key": "pneumonia"},
            headers=h,
        )
        assert finding.status_code == 201, finding.text
    admin = token(rt, "admin", None, "adm")
    rep = client.get(
        "/api/monitoring/clinical?group_by=organisation_id,study_type&period=month", headers=admin
    ).json()
    assert [(g["organisation_id"], g["study_type"], g["studies"]) for g in rep["groups"]] == [
        (a, "cxr", 2),
        (b, "cxr", 2),
    ]
    assert rep["groups"][0]["period"] == utcnow().strftime("%Y-%m")
    assert rep["groups"][0]["finding_agreement"]["value"] == 1.0
    mine = client.get("/api/monitoring/clinical", headers=token(rt, "org_admin", b, "o")).json()
    assert [g["organisation_id"] for g in mine["groups"]] == [b]
    bad = client.get("/api/monitoring/clinical?group_by=patient_name", headers=admin)
    assert bad.status_code == 422 and "cannot group by" in bad.json()["detail"]
