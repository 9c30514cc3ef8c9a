"""The admission gate's safety rules found in review: what a supervisor, a vendor or a
re-analysis must not be able to slip past it (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from radsight.algorithms.bright_region import BrightRegionAlgorithm
from radsight.algorithms.registry import Registry
from radsight.errors import AdmissionRefused
from radsight.monitor.admission import SYSTEM, change_state, register_installed
from radsight.monitor.suspension import suspend_if_approved
from radsight.store import admission as admissionstore
from radsight.store import jobs as jobstore
from radsight.store import quality
from radsight.store import results as resultstore
from radsight.store.scope import Scope
from radsight.store.tables import StudyRow
from tests.conftest import admit
from tests.pipeline.test_admission_gate import (
    APPROVED,
    NextBrightRegion,
    delivery_jobs,
    org_with_destination,
    queue_analysis,
    results_of,
    run_jobs,
    send_study,
)


class VendorSpot(BrightRegionAlgorithm):
    """A plug-in (its class lives outside radsight) shipping evidence that passes."""

    name = "acme-spot"

    def shipped_evidence(self) -> dict | None:
        return {
            "algorithm": {"name": self.name, "version": self.version},
            "reference": "the vendor's own set",
            "num_studies": 1000,
            "positives": 500,
            "negatives": 500,
            "auroc": {"value": 0.99, "lower": 0.98, "upper": 1.0, "n": 1000},
        }


VendorSpot.__module__ = "acme_ai.spot"


@pytest.fixture
def registry(runtime) -> Registry:  # type: ignore[no-untyped-def]
    reg = Registry([BrightRegionAlgorithm(), NextBrightRegion(), VendorSpot()])
    register_installed(runtime, reg)
    return reg


def test_a_plug_ins_own_passing_evidence_does_not_approve_it(runtime, registry):
    with runtime.db.session() as s:
        state, row = admissionstore.state_for(s, "acme-spot", "1.0.0", organisation_id=1)
        (ev,) = quality.list_evaluations(s, "acme-spot", "1.0.0", scope=Scope.ALL)
    assert state == "registered"
    assert row is not None and f"--evidence {ev.id}" in row.reason
    assert ev.passed is True  # stored and judged; a supervisor approves on it
    change_state(runtime, SYSTEM, "acme-spot", "1.0.0", "approved", evidence_id=ev.id)


def test_suspending_takes_the_versions_results_off_radiologists_views(runtime, registry, tmp_path):
    org = org_with_destination(runtime, "City Hospital")
    study = send_study(runtime, registry, tmp_path, org, seed=1, rule=f"{APPROVED}@1.0.0")
    with runtime.db.session() as s:
        assert s.get(StudyRow, study).ai_score is not None
    change_state(
        runtime,
        SYSTEM,
        APPROVED,
        "1.0.0",
        "suspended",
        organisation="City Hospital",
        reason="AUROC CI below the bar on our own studies",
    )
    assert results_of(runtime, study) == [("1.0.0", "analysed", "shadow", "")]
    with runtime.db.session() as s:
        assert s.get(StudyRow, study).ai_score is None  # the worklist no longer ranks by it
        shown = resultstore.list_results(s, scope=Scope.ALL, study_id=study, clinical_only=True)
        assert shown == []
    run_jobs(runtime, registry, "delivery")
    with runtime.db.session() as s:
        (job,) = jobstore.list_jobs(s, scope=Scope.ALL, study_id=study, kind="deliver")
        assert (job.state, job.error_code) == ("failed", "not_admitted")


def test_a_platform_wide_conclusive_failure_also_suspends_an_organisations_approval(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    other = org_with_destination(runtime, "Rural Clinic")
    change_state(runtime, SYSTEM, APPROVED, "1.0.0", "shadow", reason="platform review")
    admit_for = "reader study at City Hospital"
    change_state(
        runtime,
        SYSTEM,
        APPROVED,
        "1.0.0",
        "approved",
        organisation="City Hospital",
        override=True,
        reason=admit_for,
    )
    done = suspend_if_approved(
        runtime, APPROVED, "1.0.0", organisation_id=None, why="AUROC 0.20 (0.10-0.30)"
    )
    assert done is not None
    with runtime.db.session() as s:
        assert admissionstore.state_for(s, APPROVED, "1.0.0", org)[0] == "suspended"
        assert admissionstore.state_for(s, APPROVED, "1.0.0", other)[0] == "shadow"


def test_the_newest_calibration_test_speaks_unless_another_is_named(runtime, registry):
    change_state(runtime, SYSTEM, APPROVED, "1.0.0", "suspended", reason="failed our test")
    with runtime.db.session() as s:
        shipped = quality.list_evaluations(s, APPROVED, "1.0.0", scope=Scope.ALL)[0].id
        failing = quality.create_evaluation(s, APPROVED, "1.0.0", "our studies", "tests")
        quality.finish_evaluation(
            s,
            failing.id,
            summary={
                "num_studies": 500,
                "positives": 250,
                "negatives": 250,
                "auroc": {"value": 0.6, "lower": 0.55, "upper": 0.65},
            },
            passed=False,
            num_studies=500,
        )
    with pytest.raises(AdmissionRefused, match=f"evaluation {failing.id}: AUROC 0.600"):
        change_state(runtime, SYSTEM, APPROVED, "1.0.0", "approved")
    # naming the older passing test is a person's explicit decision, judged on its own
    row = change_state(runtime, SYSTEM, APPROVED, "1.0.0", "approved", evidence_id=shipped)
    assert row.evidence_id == shipped and not row.override


def test_superseded_and_replaced_results_are_not_delivered_and_old_never_supersedes_new(
    runtime, registry, tmp_path
):
    org = org_with_destination(runtime, "City Hospital")
    admit(runtime, f"{APPROVED}@2.0.0")
    study = send_study(runtime, registry, tmp_path, org, seed=1, rule=f"{APPROVED}@2.0.0")
    queue_analysis(runtime, study, org, "1.0.0")  # run later (a pinned re-analysis)
    run_jobs(runtime, registry, "analyse.cxr")
    assert results_of(runtime, study) == [
        ("1.0.0", "analysed", "clinical", ""),
        ("2.0.0", "analysed", "clinical", ""),  # the newer one stays current
    ]
    with runtime.db.session() as s:
        old, new = sorted(
            resultstore.list_results(s, scope=Scope.ALL, study_id=study),
            key=lambda r: r.algorithm_version,
        )
        old.superseded_by_id = new.id  # as if 2.0.0 had come second
        new.revision = 1  # and a re-analysis replaced 2.0.0's objects since its job queued
    run_jobs(runtime, registry, "delivery")
    with runtime.db.session() as s:
        jobs = {
            j.result_id: (j.state, j.error_code)
            for j in jobstore.list_jobs(s, scope=Scope.ALL, study_id=study, kind="deliver")
        }
    assert jobs[old.id] == ("failed", "not_admitted")
    assert jobs[new.id] == ("done", "")  # sent nothing: revision 1's own job sends it
    assert len(delivery_jobs(runtime, study)) == 2


def test_switching_off_stops_deliveries_already_queued(runtime, registry, tmp_path):
    org = org_with_destination(runtime, "City Hospital")
    study = send_study(runtime, registry, tmp_path, org, seed=1, rule=f"{APPROVED}@1.0.0")
    from radsight.monitor.admission import set_enabled

    set_enabled(runtime, SYSTEM, "City Hospital", APPROVED, False, reason="trial ended")
    run_jobs(runtime, registry, "delivery")
    with runtime.db.session() as s:
        (job,) = jobstore.list_jobs(s, scope=Scope.ALL, study_id=study, kind="deliver")
    assert (job.state, job.error_code) == ("failed", "not_admitted")
    assert "switched off" in job.error
