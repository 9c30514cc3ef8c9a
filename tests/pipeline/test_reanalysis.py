"""Re-analysis in process (SQLite and PostgreSQL): which studies, which versions, what happens.

A test algorithm in two versions (``test-bright`` 1.0.0 and 2.0.0, the bright-region
algorithm under another name, without shipped evidence) is routed by a rule that names it
without a version. Jobs run through the real job bodies (:func:`run_analysis`).
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from radsight import auth
from radsight.algorithms.bright_region import BrightRegionAlgorithm
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import InvalidInput, NotFound
from radsight.ingest.accept import accept_instance
from radsight.monitor.admission import SYSTEM, change_state
from radsight.pipeline.analyse import run_analysis
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.reanalysis import Selection, reanalyse
from radsight.pipeline.routing import RuleSet, load_rules
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import AuditEventRow, JobRow, ResultRow, StudyRow
from radsight.web import create_app
from tests.conftest import write_rules

NAME = "test-bright"
REASON = "validated on our own cases by the regional board"


class BrightV1(BrightRegionAlgorithm):
    name = NAME
    version = "1.0.0"

    def shipped_evidence(self) -> dict | None:
        return None


class BrightV2(BrightV1):
    version = "2.0.0"


def registry_of(*versions: type[BrightV1]) -> Registry:
    return Registry([v() for v in versions])


def rules_for(tmp_path: Path, registry: Registry) -> RuleSet:
    return load_rules(write_rules(tmp_path / "rules.yaml", [NAME]), registry.refs())


def approve(rt: Runtime, registry: Registry, version: str) -> None:
    """Approve a version platform-wide with an override (the supervisor's decision)."""
    change_state(
        rt, SYSTEM, NAME, version, "approved", reason=REASON, override=True, registry=registry
    )


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def send(rt: Runtime, org_id: int, study_uid: str, seed: int = 1) -> None:
    ds = make_radiograph(
        study_instance_uid=study_uid, bright_spot=(0.3, 0.5, 0.1), seed=seed, instance_number=seed
    )
    accept_instance(rt, part10(ds), organisation_id=org_id, source="import")


def route_and_run(rt: Runtime, registry: Registry, rules: RuleSet) -> None:
    """The assembler (quiet periods ended now), then every analysis job, as a worker would."""
    with rt.db.session() as s:
        s.execute(update(StudyRow).where(StudyRow.state == "receiving").values(ready_at=utcnow()))
    while assemble_once(rt, registry, rules):
        pass
    run_jobs(rt, registry)


def run_jobs(rt: Runtime, registry: Registry) -> None:
    while True:
        with rt.db.session() as s:
            job = jobstore.claim_job(s, "test", 60.0, queues=["analyse.cxr", "analyse.other"])
        if job is None:
            return
        run_analysis(rt, registry, job)
        with rt.db.session() as s:
            jobstore.finish_job(s, job.id)


def org_with_destination(rt: Runtime, name: str = "City Hospital", region: str = "North") -> int:
    with rt.db.session() as s:
        org = tenants.create_organisation(s, name, region)
        tenants.create_destination(s, org.id, "pacs", "PACS", "127.0.0.1", 11112)
        return org.id


def results_of(rt: Runtime, study_uid: str) -> dict[str, ResultRow]:
    with rt.db.session() as s:
        rows = s.scalars(
            select(ResultRow)
            .join(StudyRow, StudyRow.id == ResultRow.study_id)
            .where(StudyRow.study_instance_uid == study_uid)
        ).all()
        for r in rows:
            s.expunge(r)  # objects were loaded eagerly (selectin)
        return {r.algorithm_version: r for r in rows}


def delivery_keys(rt: Runtime) -> list[str]:
    with rt.db.session() as s:
        return sorted(s.scalars(select(JobRow.dedup_key).where(JobRow.kind == "deliver")))


def analysis_job_count(rt: Runtime) -> int:
    with rt.db.session() as s:
        return len(jobstore.list_jobs(s, scope=Scope.ALL, kind="analyse"))


def run(rt: Runtime, registry: Registry, rules: RuleSet, **kw: object):  # type: ignore[no-untyped-def]
    dry_run = bool(kw.pop("dry_run", False))
    return reanalyse(
        rt, registry, rules, Selection(**kw), scope=Scope.ALL, actor=SYSTEM, dry_run=dry_run
    )


def actions(summary) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return sorted((d.study_instance_uid, d.algorithm_version, d.action) for d in summary.decisions)


@pytest.fixture
def analysed_by_v1(runtime: Runtime, tmp_path: Path) -> tuple[Runtime, int, str]:
    """One study of an organisation with a destination, analysed by 1.0.0 (approved)."""
    v1 = registry_of(BrightV1)
    approve(runtime, v1, "1.0.0")
    org = org_with_destination(runtime)
    study = generate_uid()
    send(runtime, org, study)
    route_and_run(runtime, v1, rules_for(tmp_path, v1))
    assert results_of(runtime, study)["1.0.0"].status == "analysed"
    return runtime, org, study


def test_a_new_approved_version_analyses_again_and_supersedes_the_old_result(
    analysed_by_v1, tmp_path
):
    rt, _org, study = analysed_by_v1
    both = registry_of(BrightV1, BrightV2)
    approve(rt, both, "2.0.0")
    rules = rules_for(tmp_path, both)
    summary = run(rt, both, rules, study_instance_uids=(study,))
    assert actions(summary) == [(study, "2.0.0", "analyse")]
    assert summary.counts()["analyse"] == 1 and len(summary.job_ids) == 1
    with rt.db.session() as s:
        (st,) = studystore.list_studies(s, scope=Scope.ALL)
        assert st.state == "routed", "back to routed while its jobs run"
    run_jobs(rt, both)
    results = results_of(rt, study)
    assert results["2.0.0"].status == "analysed" and results["2.0.0"].revision == 0
    assert results["1.0.0"].superseded_by_id == results["2.0.0"].id
    assert results["2.0.0"].superseded_by_id is None
    assert delivery_keys(rt) == sorted(f"deliver:{results[v].id}:1" for v in ("1.0.0", "2.0.0")), (
        "one delivery of each result: 2.0.0's SR goes to the PACS once"
    )
    with rt.db.session() as s:
        (st,) = studystore.list_studies(s, scope=Scope.ALL)
        assert st.state == "analysed"
    # nothing changed since: up to date, no job
    again = run(rt, both, rules, study_instance_uids=(study,))
    assert actions(again) == [(study, "2.0.0", "up_to_date")]
    assert again.job_ids == [] and analysis_job_count(rt) == 2


def test_a_late_instance_makes_a_new_revision_with_new_uids(analysed_by_v1, tmp_path):
    rt, org, study = analysed_by_v1
    v1 = registry_of(BrightV1)
    rules = rules_for(tmp_path, v1)
    before = results_of(rt, study)["1.0.0"]
    first_sr = [o.sop_instance_uid for o in before.objects if o.role == "sr"]
    send(rt, org, study, seed=2)  # the study stays analysed: nothing routes it again
    with rt.db.session() as s:
        (st,) = studystore.list_studies(s, scope=Scope.ALL)
        assert st.state == "analysed" and st.num_instances == 2
    summary = run(rt, v1, rules, study_instance_uids=(study,))
    (decision,) = summary.decisions
    assert decision.action == "reanalyse" and decision.revision == 1
    assert "1 instance(s) not in the analysed input" in decision.reason
    run_jobs(rt, v1)
    after = results_of(rt, study)["1.0.0"]
    assert after.id == before.id and after.revision == 1
    assert [o.role for o in after.objects] == ["sr", "sc", "sc"], "both instances analysed"
    new_sr = [o.sop_instance_uid for o in after.objects if o.role == "sr"]
    assert new_sr != first_sr and len(new_sr) == 1
    assert not {o.sop_instance_uid for o in after.objects} & {
        o.sop_instance_uid for o in before.objects
    }
    assert delivery_keys(rt) == sorted([f"deliver:{before.id}:1", f"deliver:{before.id}:1:r1"])
    # the revision covers every instance now
    again = run(rt, v1, rules, study_instance_uids=(study,))
    assert actions(again) == [(study, "1.0.0", "up_to_date")]


def test_force_reanalyses_an_unchanged_study(analysed_by_v1, tmp_path):
    rt, _org, study = analysed_by_v1
    v1 = registry_of(BrightV1)
    summary = run(rt, v1, rules_for(tmp_path, v1), study_instance_uids=(study,), force=True)
    assert actions(summary) == [(study, "1.0.0", "reanalyse")]
    assert summary.decisions[0].reason == "re-analysis forced"


def test_selection_by_organisation_and_received_date_range(runtime, tmp_path):
    v1 = registry_of(BrightV1)
    rules = rules_for(tmp_path, v1)
    a = org_with_destination(runtime, "Alpha", "North")
    b = org_with_destination(runtime, "Bravo", "North")
    days = {generate_uid(): (a, 1), generate_uid(): (a, 10), generate_uid(): (a, 20)}
    other = generate_uid()
    for uid, (org, _) in [*days.items(), (other, (b, 10))]:
        send(runtime, org, uid)
    route_and_run(runtime, v1, rules)
    with runtime.db.session() as s:
        for uid, (_, day) in days.items():
            s.execute(
                update(StudyRow)
                .where(StudyRow.study_instance_uid == uid)
                .values(first_received_at=datetime(2026, 11, day, 9, 30))
            )
    summary = run(
        runtime,
        v1,
        rules,
        organisation="Alpha",
        since=datetime(2026, 11, 5),
        until=datetime(2026, 11, 21),
        force=True,
        dry_run=True,
    )
    in_range = sorted(uid for uid, (_, day) in days.items() if 5 <= day <= 20)
    assert summary.studies == 2
    assert [
        d.study_instance_uid for d in sorted(summary.decisions, key=lambda d: d.study_instance_uid)
    ] == in_range
    # the limit bounds a selection, with a message saying what to do
    with pytest.raises(InvalidInput, match="3 studies match, more than the limit of 2"):
        run(runtime, v1, rules, organisation="Alpha", limit=2, dry_run=True)


def test_selection_by_algorithm_version(analysed_by_v1, tmp_path):
    rt, _org, study = analysed_by_v1
    both = registry_of(BrightV1, BrightV2)
    approve(rt, both, "2.0.0")
    rules = rules_for(tmp_path, both)
    only_v1 = run(rt, both, rules, study_instance_uids=(study,), algorithm=f"{NAME}@1.0.0")
    assert actions(only_v1) == [(study, "1.0.0", "up_to_date")]
    only_v2 = run(
        rt, both, rules, study_instance_uids=(study,), algorithm=f"{NAME}@2.0.0", dry_run=True
    )
    assert actions(only_v2) == [(study, "2.0.0", "analyse")]
    not_routed = run(
        rt,
        Registry([BrightV1(), BrightRegionAlgorithm()]),
        rules,
        study_instance_uids=(study,),
        algorithm="radsight-bright-region",
    )
    (decision,) = not_routed.decisions
    assert decision.action == "skipped"
    assert decision.reason == "the rules in force do not route this study to radsight-bright-region"
    with pytest.raises(NotFound, match="version 3.0.0 is not registered"):
        run(rt, both, rules, study_instance_uids=(study,), algorithm=f"{NAME}@3.0.0")


def test_a_dry_run_changes_nothing(analysed_by_v1, tmp_path):
    rt, _org, study = analysed_by_v1
    both = registry_of(BrightV1, BrightV2)
    approve(rt, both, "2.0.0")
    summary = run(rt, both, rules_for(tmp_path, both), study_instance_uids=(study,), dry_run=True)
    assert actions(summary) == [(study, "2.0.0", "analyse")]
    assert summary.dry_run and summary.job_ids == []
    assert analysis_job_count(rt) == 1
    with rt.db.session() as s:
        (st,) = studystore.list_studies(s, scope=Scope.ALL)
        assert st.state == "analysed"
        assert (
            s.scalars(select(AuditEventRow).where(AuditEventRow.action == "reanalyse")).all() == []
        )


def test_a_shadow_result_of_a_newly_approved_version_is_promoted_and_delivered(
    analysed_by_v1, tmp_path
):
    rt, _org, study = analysed_by_v1
    both = registry_of(BrightV1, BrightV2)
    rules = rules_for(tmp_path, both)
    run(rt, both, rules, study_instance_uids=(study,), algorithm=f"{NAME}@2.0.0")
    run_jobs(rt, both)
    # 2.0.0 ran before anyone approved it: its result is a shadow one, never delivered
    with rt.db.session() as s:
        v2 = resultstore.get_result_for(s, results_of(rt, study)["2.0.0"].study_id, NAME, "2.0.0")
        v2.mode, v2.superseded_by_id = "shadow", None
        s.execute(update(ResultRow).values(superseded_by_id=None))
        s.execute(update(JobRow).where(JobRow.kind == "deliver").values(state="done"))
        s.execute(
            JobRow.__table__.delete().where(JobRow.kind == "deliver", JobRow.result_id == v2.id)
        )
    unapproved = run(rt, both, rules, study_instance_uids=(study,), algorithm=f"{NAME}@2.0.0")
    assert actions(unapproved) == [(study, "2.0.0", "up_to_date")]
    approve(rt, both, "2.0.0")
    summary = run(rt, both, rules, study_instance_uids=(study,), algorithm=f"{NAME}@2.0.0")
    assert actions(summary) == [(study, "2.0.0", "promote")]
    assert summary.job_ids == [], "a promotion runs no analysis"
    results = results_of(rt, study)
    assert results["2.0.0"].mode == "clinical"
    assert results["1.0.0"].superseded_by_id == results["2.0.0"].id
    assert f"deliver:{results['2.0.0'].id}:1" in delivery_keys(rt)


def test_studies_still_receiving_are_skipped(runtime, tmp_path):
    v1 = registry_of(BrightV1)
    org = org_with_destination(runtime)
    study = generate_uid()
    send(runtime, org, study)
    summary = run(runtime, v1, rules_for(tmp_path, v1), study_instance_uids=(study,))
    (decision,) = summary.decisions
    assert decision.action == "skipped" and "still receiving" in decision.reason
    assert analysis_job_count(runtime) == 0


def test_selection_needs_studies_or_an_organisation(runtime, tmp_path):
    v1 = registry_of(BrightV1)
    with pytest.raises(InvalidInput, match="give Study Instance UIDs or an organisation"):
        run(runtime, v1, rules_for(tmp_path, v1))
    with pytest.raises(InvalidInput, match="a received date range needs an organisation"):
        run(runtime, v1, rules_for(tmp_path, v1), study_instance_uids=("1.2",), since=utcnow())


# --- the API ----------------------------------------------------------------------------


def test_api_roles_and_tenancy(runtime, tmp_path):
    v1 = registry_of(BrightV1)
    approve(runtime, v1, "1.0.0")
    rules = rules_for(tmp_path, v1)
    a = org_with_destination(runtime, "Alpha", "North")
    b = org_with_destination(runtime, "Bravo", "North")
    c = org_with_destination(runtime, "Charlie", "South")
    uids = {org: generate_uid() for org in (a, b, c)}
    for org, uid in uids.items():
        send(runtime, org, uid)
    route_and_run(runtime, v1, rules)
    with runtime.db.session() as s:
        north = tenants.get_region(s, "North").id
        sup = auth.create_user(s, a, "sup-north", "a long password", "supervisor", region_id=north)
        sup_id = sup.id
        headers = {}
        for who, role, org, user in [
            ("radiologist", "radiologist", a, None),
            ("org_admin", "org_admin", a, None),
            ("supervisor", "supervisor", a, sup.id),
            ("admin", "admin", None, None),
        ]:
            _, plain = auth.create_token(s, who, role, org, user_id=user)
            headers[who] = {"Authorization": f"Bearer {plain}"}
    with TestClient(create_app(runtime, v1, rules)) as client:

        def post(who: str, **body: object):  # type: ignore[no-untyped-def]
            return client.post(
                "/api/reanalyses", json={**body, "force": True}, headers=headers[who]
            )

        r = post("radiologist", organisation="Alpha")
        assert r.status_code == 403
        assert "supervisor or org_admin" in r.json()["detail"]
        # an organisation admin: their own organisation only; another reads as absent
        assert post("org_admin", organisation="Bravo").status_code == 404
        assert post("org_admin", study_instance_uids=[uids[b]]).status_code == 404
        r = post("org_admin", organisation="Alpha", dry_run=True)
        assert r.status_code == 200
        assert r.json()["studies"] == 1 and r.json()["counts"]["reanalyse"] == 1
        assert r.json()["job_ids"] == []
        # a supervisor: the organisations of their region
        r = post("supervisor", study_instance_uids=[uids[a], uids[b], uids[c]])
        assert r.status_code == 200, r.text
        body = r.json()
        assert sorted(d["study_instance_uid"] for d in body["decisions"]) == sorted(
            [uids[a], uids[b]]
        )
        assert body["counts"]["reanalyse"] == 2 and len(body["job_ids"]) == 2
        assert post("supervisor", organisation="Charlie").status_code == 404
        # a platform admin: every organisation
        r = post("admin", organisation="Charlie", dry_run=True)
        assert r.status_code == 200 and r.json()["studies"] == 1
        r = post("admin", organisation="Alpha", since="2026-01-01T00:00:00", until="2025-01-01")
        assert r.status_code == 422 and "the date range is empty" in r.json()["detail"]
    with runtime.db.session() as s:
        (audit,) = s.scalars(select(AuditEventRow).where(AuditEventRow.action == "reanalyse"))
        assert (audit.actor, audit.user_id) == ("supervisor", sup_id), "the token and its user"
        assert audit.detail["counts"]["reanalyse"] == 2
        assert sorted(audit.detail["selection"]["study_instance_uids"]) == sorted(
            [uids[a], uids[b], uids[c]]
        )
        assert sorted(audit.detail["job_ids"]) == sorted(body["job_ids"])


def test_cli_date_parsing_includes_the_until_day():
    from radsight.cli.reanalyse import parse_when

    assert parse_when("2026-11-30", end_of_day=True) == datetime(2026, 12, 1)
    assert parse_when("2026-11-30", end_of_day=False) == datetime(2026, 11, 30)
    assert parse_when("2026-11-30T12:00", end_of_day=True) == datetime(2026, 11, 30, 12)
    with pytest.raises(InvalidInput, match="is not a date"):
        parse_when("last week", end_of_day=False)
