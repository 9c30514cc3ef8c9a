"""Drift: a synthetic shift in scores (and inputs) raises an alert; a stable stream of the
same size stays silent."""

from __future__ import annotations

import numpy as np
import pytest

from radsight.monitor.checks import drift_report, run_checks
from radsight.store import quality
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import InstanceRow, ResultRow, SeriesRow, StudyRow

from .conftest import make_org, token

N = 300
ALG, VER = "radsight-cxr", "1.0.0"


def draw(rng, shifted: bool):  # type: ignore[no-untyped-def]
    """Scores, manufacturer, spacing, size and age as a stream of studies would bring them."""
    scores = rng.beta(5, 2, N) if shifted else rng.beta(2, 5, N)
    makers = rng.choice(
        ["GE", "Siemens", "Carestream"], N, p=[0.2, 0.2, 0.6] if shifted else [0.6, 0.3, 0.1]
    )
    spacing = rng.choice([0.139, 0.143, 0.15], N)
    size = rng.choice([2048, 2500, 3000], N)
    age = np.clip(rng.normal(52, 15, N), 18, 95)
    return scores, makers, spacing, size, age


def baseline(rt) -> int:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    scores, makers, spacing, size, age = draw(rng, False)
    cases = [
        {
            "id": str(i),
            "label": int(scores[i] > 0.3),
            "score": float(scores[i]),
            "features": {
                "manufacturer": str(makers[i]),
                "pixel_spacing": float(spacing[i]),
                "rows": int(size[i]),
                "columns": int(size[i]) - 100,
                "patient_age": float(age[i]),
            },
        }
        for i in range(N)
    ]
    with rt.db.session() as s:
        ev = quality.create_evaluation(s, ALG, VER, "reference", "qe")
        quality.finish_evaluation(s, ev.id, summary={"cases": cases}, passed=True, num_studies=N)
        return ev.id


def live_stream(rt, org: int, shifted: bool, seed: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    scores, makers, spacing, size, age = draw(rng, shifted)
    now = utcnow()
    with rt.db.session() as s:
        for i in range(N):
            birth = 2026 - int(age[i])
            st = StudyRow(
                organisation_id=org,
                study_instance_uid=f"2.25.{seed}.{i}",
                study_type="cxr",
                state="analysed",
                first_received_at=now,
                last_received_at=now,
                ready_at=now,
                study_date="20261101",
                patient_birth_date=f"{birth}0501",
            )
            s.add(st)
            s.flush()
            se = SeriesRow(
                organisation_id=org, study_id=st.id, series_instance_uid=f"2.25.{seed}.{i}.1"
            )
            s.add(se)
            s.flush()
            s.add(
                InstanceRow(
                    organisation_id=org,
                    study_id=st.id,
                    series_id=se.id,
                    sop_instance_uid=f"2.25.{seed}.{i}.1.1",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    storage_key=f"k/{seed}/{i}",
                    size=1,
                    sha256="0" * 64,
                    received_at=now,
                    attributes={
                        "Manufacturer": str(makers[i]),
                        "ImagerPixelSpacing": [float(spacing[i]), float(spacing[i])],
                        "Rows": int(size[i]),
                        "Columns": int(size[i]) - 100,
                    },
                )
            )
            s.add(
                ResultRow(
                    organisation_id=org,
                    study_id=st.id,
                    algorithm_name=ALG,
                    algorithm_version=VER,
                    status="analysed",
                    study_score=float(scores[i]),
                    created_at=now,
                )
            )


def test_a_stable_stream_stays_silent(rt):
    org = make_org(rt)
    baseline(rt)
    live_stream(rt, org, shifted=False, seed=2)
    rep = drift_report(rt, ALG, VER, scope=Scope.ALL)
    assert rep["status"] == "stable" and rep["current_studies"] == N
    assert {f["feature"] for f in rep["features"]} == {
        "score",
        "manufacturer",
        "pixel_spacing",
        "image_size",
        "patient_age",
    }
    assert all(f["psi"] < 0.1 for f in rep["features"])
    summary = run_checks(rt)
    assert [a for a in summary["raised"] if a["kind"] == "drift"] == []


def test_a_shift_raises_a_drift_alert(rt):
    org = make_org(rt)
    ev = baseline(rt)
    live_stream(rt, org, shifted=True, seed=3)
    rep = drift_report(rt, ALG, VER, scope=Scope.ALL)
    assert rep["status"] == "drift" and rep["baseline_evaluation_id"] == ev
    drifted = {f["feature"] for f in rep["features"] if f["drift"]}
    assert drifted == {"score", "manufacturer"}  # spacing, size and age did not move
    score = next(f for f in rep["features"] if f["feature"] == "score")
    assert score["psi"] > 1.0 and score["ks_p"] < 1e-6
    raised = [a for a in run_checks(rt)["raised"] if a["kind"] == "drift"]
    assert sorted(a["message"].split()[0] for a in raised) == ["manufacturer", "score"]


@pytest.mark.parametrize("setup", ["no_baseline", "too_few"])
def test_drift_needs_a_baseline_and_enough_studies(rt, setup):
    org = make_org(rt)
    if setup == "too_few":
        baseline(rt)
        rt.settings.drift_min_studies = N + 1
    live_stream(rt, org, shifted=True, seed=4)
    rep = drift_report(rt, ALG, VER, scope=Scope.ALL)
    assert rep["features"] == []
    assert ("no baseline" if setup == "no_baseline" else "too few studies") in rep["status"]


def test_a_principal_sees_the_drift_of_its_own_organisations_only(rt, client_for):
    org = make_org(rt)
    other = make_org(rt, "Rural Clinic", "South")
    baseline(rt)
    live_stream(rt, org, shifted=True, seed=5)
    client = client_for(rt)
    query = {"algorithm": ALG, "version": VER}
    mine = client.get("/api/monitoring/drift", params=query, headers=token(rt, "radiologist", org))
    assert mine.status_code == 200 and mine.json()["current_studies"] == N
    theirs = client.get(
        "/api/monitoring/drift", params=query, headers=token(rt, "radiologist", other, "o")
    )
    assert theirs.status_code == 200 and theirs.json()["current_studies"] == 0
