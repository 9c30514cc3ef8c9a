"""The admission gate in the pipeline: what runs, in which mode, what leaves the platform
and who sees it (issue 14, points 3 and 4), on SQLite and PostgreSQL.

Studies go through the real pipeline code in-process: accepted, routed by a rule that
names the algorithm without a version, analysed and delivered by the jobs' own bodies.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from radsight import auth
from radsight.algorithms.bright_region import BrightRegionAlgorithm
from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.monitor.admission import SYSTEM, change_state, register_installed
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.routing import load_rules
from radsight.pipeline.runner import run_claimed
from radsight.review.viewer import build_study_view
from radsight.runtime import Runtime
from radsight.store import admission as admissionstore
from radsight.store import jobs as jobstore
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import StudyRow
from radsight.web import create_app
from tests.conftest import admit, write_rules

APPROVED = "radsight-bright-region"  # approved by its shipped evidence


class NextBrightRegion(BrightRegionAlgorithm):
    """A newer version of bright-region that ships no evidence (starts registered)."""

    version = "2.0.0"


@pytest.fixture
def registry(runtime: Runtime) -> Registry:
    reg = Registry([BrightRegionAlgorithm(), NextBrightRegion()])
    register_installed(runtime, reg)
    return reg


def org_with_destination(rt: Runtime, name: str) -> int:
    with rt.db.session() as s:
        org = tenants.create_organisation(s, name, "North")
        # the port is never connected to: these tests look at the jobs, not the bytes
        tenants.create_destination(s, org.id, "PACS", "PACS", "127.0.0.1", 1)
        return org.id


def send_study(
    rt: Runtime, registry: Registry, tmp_path: Path, org_id: int, seed: int, rule: str = APPROVED
) -> int:
    """One bright-spot radiograph: accepted, routed by a rule naming ``rule``, analysed."""
    ds = make_radiograph(bright_spot=(0.3, 0.5, 0.1), seed=seed)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accepted = accept_instance(rt, buf.getvalue(), organisation_id=org_id, source="import")
    rules = load_rules(write_rules(tmp_path / "rules.yaml", [rule]), registry.refs())
    with rt.db.session() as s:
        s.execute(update(StudyRow).where(StudyRow.state == "receiving").values(ready_at=utcnow()))
    while assemble_once(rt, registry, rules):
        pass
    run_jobs(rt, registry, "analyse.cxr", "analyse.other")
    return accepted.study_id


def run_jobs(rt: Runtime, registry: Registry, *queues: str) -> None:
    while True:
        with rt.db.session() as s:
            job = jobstore.claim_job(s, "tests", 60.0, queues=list(queues))
        if job is None:
            return
        run_claimed(rt, registry, job, "tests")


def queue_analysis(rt: Runtime, study_id: int, org_id: int, version: str) -> None:
    """An analysis job of bright-region ``version`` for a study, as routing makes one."""
    with rt.db.session() as s:
        jobstore.create_job(
            s,
            dedup_key=f"analyse:{study_id}:{APPROVED}:{version}",
            organisation_id=org_id,
            kind="analyse",
            queue="analyse.cxr",
            study_id=study_id,
            algorithm_name=APPROVED,
            algorithm_version=version,
        )


def results_of(rt: Runtime, study_id: int) -> list[tuple[str, str, str, str]]:
    with rt.db.session() as s:
        return sorted(
            (r.algorithm_version, r.status, r.mode, "superseded" if r.superseded_by_id else "")
            for r in resultstore.list_results(s, scope=Scope.ALL, study_id=study_id)
        )


def delivery_jobs(rt: Runtime, study_id: int) -> list[str]:
    with rt.db.session() as s:
        return [
            j.state
            for j in jobstore.list_jobs(s, scope=Scope.ALL, study_id=study_id, kind="deliver")
        ]


def study_state(rt: Runtime, study_id: int) -> tuple[str, str]:
    with rt.db.session() as s:
        st = studystore.get_study(s, study_id, scope=Scope.ALL)
        return st.state, st.state_reason


def test_a_shadow_result_is_stored_and_not_delivered_until_the_version_is_approved(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    first = send_study(runtime, registry, tmp_path, org, seed=1, rule=f"{APPROVED}@2.0.0")

    assert results_of(runtime, first) == [("2.0.0", "analysed", "shadow", "")]
    assert delivery_jobs(runtime, first) == []
    assert study_state(runtime, first) == (
        "not_analysed",
        f"no approved algorithm analysed this study: {APPROVED} 2.0.0 ran in shadow mode "
        "(results for supervisors)",
    )

    admit(runtime, f"{APPROVED}@2.0.0")
    second = send_study(runtime, registry, tmp_path, org, seed=2, rule=f"{APPROVED}@2.0.0")

    assert results_of(runtime, second) == [("2.0.0", "analysed", "clinical", "")]
    assert delivery_jobs(runtime, second) == ["queued"]
    assert study_state(runtime, second) == ("analysed", "")
    assert delivery_jobs(runtime, first) == []  # approval delivers nothing retroactively


def test_a_bare_name_runs_the_approved_version_and_newer_ones_in_shadow(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    study = send_study(runtime, registry, tmp_path, org, seed=1)

    assert results_of(runtime, study) == [
        ("1.0.0", "analysed", "clinical", ""),
        ("2.0.0", "analysed", "shadow", ""),
    ]
    with runtime.db.session() as s:
        (job,) = jobstore.list_jobs(s, scope=Scope.ALL, study_id=study, kind="deliver")
        delivered = resultstore.get_result(s, job.result_id, scope=Scope.ALL)
        assert (delivered.algorithm_version, delivered.mode) == ("1.0.0", "clinical")
    assert study_state(runtime, study) == ("analysed", "")


def test_a_version_suspended_for_one_organisation_is_not_delivered_there_only(
    runtime, registry, tmp_path
):
    a = org_with_destination(runtime, "Hospital A")
    b = org_with_destination(runtime, "Hospital B")
    change_state(
        runtime,
        SYSTEM,
        APPROVED,
        "1.0.0",
        "suspended",
        organisation="Hospital A",
        reason="calibration alert at Hospital A",
    )

    in_a = send_study(runtime, registry, tmp_path, a, seed=1, rule=f"{APPROVED}@1.0.0")
    in_b = send_study(runtime, registry, tmp_path, b, seed=2, rule=f"{APPROVED}@1.0.0")

    assert results_of(runtime, in_a) == [("1.0.0", "analysed", "shadow", "")]
    assert delivery_jobs(runtime, in_a) == []
    assert study_state(runtime, in_a)[0] == "not_analysed"
    assert results_of(runtime, in_b) == [("1.0.0", "analysed", "clinical", "")]
    assert delivery_jobs(runtime, in_b) == ["queued"]


def test_a_delivery_of_a_version_suspended_after_queuing_fails_not_admitted(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    study = send_study(runtime, registry, tmp_path, org, seed=1, rule=f"{APPROVED}@1.0.0")
    assert delivery_jobs(runtime, study) == ["queued"]

    change_state(
        runtime,
        SYSTEM,
        APPROVED,
        "1.0.0",
        "suspended",
        organisation="City Hospital",
        reason="sensitivity CI below the bar this week",
    )
    run_jobs(runtime, registry, "delivery")

    with runtime.db.session() as s:
        (job,) = jobstore.list_jobs(s, scope=Scope.ALL, study_id=study, kind="deliver")
        assert (job.state, job.error_code) == ("failed", "not_admitted")
        assert "suspended" in job.error


def test_a_new_clinical_version_supersedes_the_older_clinical_result(runtime, registry, tmp_path):
    org = org_with_destination(runtime, "City Hospital")
    study = send_study(runtime, registry, tmp_path, org, seed=1, rule=f"{APPROVED}@1.0.0")
    admit(runtime, f"{APPROVED}@2.0.0")
    queue_analysis(runtime, study, org, "2.0.0")  # routed again (re-analysis does this)
    run_jobs(runtime, registry, "analyse.cxr")

    assert results_of(runtime, study) == [
        ("1.0.0", "analysed", "clinical", "superseded"),
        ("2.0.0", "analysed", "clinical", ""),
    ]
    with runtime.db.session() as s:
        old, new = sorted(
            resultstore.list_results(s, scope=Scope.ALL, study_id=study), key=lambda r: r.id
        )
        assert old.superseded_by_id == new.id
        shown = resultstore.list_results(s, scope=Scope.ALL, study_id=study, clinical_only=True)
        assert [r.algorithm_version for r in shown] == ["2.0.0"]
    assert len(delivery_jobs(runtime, study)) == 2  # one per clinical result


def test_an_algorithm_switched_off_for_an_organisation_is_not_routed_there(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    with runtime.db.session() as s:
        admissionstore.set_switch(
            s, org, APPROVED, False, reason="not contracted here", actor="tests"
        )

    study = send_study(runtime, registry, tmp_path, org, seed=1)

    assert results_of(runtime, study) == []
    assert study_state(runtime, study) == (
        "not_analysed",
        f"{APPROVED} is switched off for this organisation: not contracted here",
    )
    with runtime.db.session() as s:
        assert jobstore.list_jobs(s, scope=Scope.ALL, study_id=study) == []


def test_radiologists_see_clinical_results_and_supervisors_also_shadow_ones(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    study = send_study(runtime, registry, tmp_path, org, seed=1)
    with runtime.db.session() as s:
        row = studystore.get_study(s, study, scope=Scope.ALL)
        for_radiologist = build_study_view(s, row, with_shadow=False)
        for_supervisor = build_study_view(s, row, with_shadow=True)
        marks = {m["mode"] for m in for_supervisor.viewer_data["marks"]}
        assert {m["mode"] for m in for_radiologist.viewer_data["marks"]} == {"clinical"}
        radiologist = auth.create_token(s, "r", "radiologist", org)[1]
        supervisor = auth.create_token(s, "s", "supervisor", org)[1]
    assert [(r.algorithm_version, r.mode) for r in for_radiologist.results] == [
        ("1.0.0", "clinical")
    ]
    assert [(r.algorithm_version, r.mode) for r in for_supervisor.results] == [
        ("1.0.0", "clinical"),
        ("2.0.0", "shadow"),
    ]
    assert marks == {"clinical", "shadow"}

    rules = load_rules(write_rules(tmp_path / "api.yaml", [APPROVED]), registry.refs())
    with TestClient(create_app(runtime, registry, rules)) as client:

        def versions(token: str, path: str) -> list[tuple[str, str]]:
            res = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert res.status_code == 200, res.text
            body = res.json()
            rows = body["results"] if isinstance(body, dict) else body
            return sorted((r["algorithm_version"], r["mode"]) for r in rows)

        for path in (f"/api/studies/{study}/results", f"/api/studies/{study}", "/api/results"):
            assert versions(radiologist, path) == [("1.0.0", "clinical")]
            assert versions(supervisor, path) == [("1.0.0", "clinical"), ("2.0.0", "shadow")]
        with runtime.db.session() as s:
            (shadow,) = [
                r.id
                for r in resultstore.list_results(s, scope=Scope.ALL, study_id=study)
                if r.mode == "shadow"
            ]
        hidden = client.get(
            f"/api/results/{shadow}", headers={"Authorization": f"Bearer {radiologist}"}
        )
        assert hidden.status_code == 404
        shown = client.get(
            f"/api/results/{shadow}", headers={"Authorization": f"Bearer {supervisor}"}
        )
        assert shown.json()["mode"] == "shadow"
