"""Automatic suspension: a conclusive calibration (or clinical) failure of an approved version
suspends it for the organisation it is about, with an alert, a webhook and an audit row;
only a person reinstates it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from radsight.algorithms.registry import Registry
from radsight.dicom.synthetic import make_radiograph
from radsight.monitor import admission
from radsight.monitor.checks import run_checks
from radsight.monitor.service import run_evaluation
from radsight.runtime import Runtime
from radsight.store import admission as admissionstore
from radsight.store import people, quality
from radsight.store.scope import Scope
from radsight.store.tables import JobRow, ResultRow, StudyRow

from .conftest import analyse_studies, bright_study, dicom_bytes, make_org
from .test_clinical import judge, radiologist, results

ALG, VER = "radsight-bright-region", "1.0.0"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP server standing in for the hospital's alert webhook."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()


@pytest.fixture
def two_orgs(runtime: Runtime, registry: Registry, receiver) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Organisations A and B, the built-in versions registered (bright-region approved
    platform-wide on its shipped evidence), alerts sent to the webhook."""
    runtime.settings.alert_webhook_url = receiver[0]
    admission.register_installed(runtime, registry)
    return make_org(runtime, "Hospital A", "North"), make_org(runtime, "Hospital B", "North")


def write_reference(root: Path, labels: list[int], spots: list[bool]) -> Path:
    """A reference set of synthetic radiographs: bright spots where ``spots`` says, labelled
    with ``labels`` (a label that disagrees with the spot is a case the algorithm gets wrong)."""
    root.mkdir(parents=True)
    rows = ["study_instance_uid,label"]
    for i, (label, spot) in enumerate(zip(labels, spots, strict=True)):
        ds = make_radiograph(bright_spot=(0.3, 0.5, 0.1) if spot else None, seed=300 + i)
        (root / f"{i}.dcm").write_bytes(dicom_bytes(ds))
        rows.append(f"{ds.StudyInstanceUID},{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def inverted_reference(root: Path, n: int = 20) -> Path:
    """Every label the opposite of what the image shows: AUROC 0, its CI far below 0.81."""
    spots = [i % 2 == 0 for i in range(n)]
    return write_reference(root, [int(not s) for s in spots], spots)


def state(rt: Runtime, org_id: int) -> str:
    with rt.db.session() as s:
        return admissionstore.state_for(s, ALG, VER, org_id)[0]


def calibration_alerts(rt: Runtime) -> list:  # type: ignore[type-arg]
    with rt.db.session() as s:
        return quality.list_alerts(s, scope=Scope.ALL, kind="calibration")


def test_a_conclusive_calibration_failure_suspends_for_that_organisation_only(
    runtime, registry, two_orgs, receiver, tmp_path, caplog
):
    a, b = two_orgs
    ref = inverted_reference(tmp_path / "inverted")
    algorithm = registry.resolve(ALG)
    caplog.set_level("INFO")
    row, summary, _ = run_evaluation(
        runtime, algorithm, ref, created_by="qe", organisation="Hospital A", progress=False
    )
    assert summary["passed"] is False and summary["auroc"]["upper"] < 0.81
    assert row.organisation_id == a
    assert (state(runtime, a), state(runtime, b)) == ("suspended", "approved")
    with runtime.db.session() as s:
        _, decided = admissionstore.state_for(s, ALG, VER, a)
        assert decided is not None
        assert (decided.actor, decided.evidence_id, decided.organisation_id) == (
            "radsight",
            row.id,
            a,
        )
        assert f"calibration test {row.id}" in decided.reason and "bar 0.81" in decided.reason
        (audit,) = people.list_audit(s, scope=Scope.ALL, action="algorithm.suspended")
        assert audit.actor == "radsight" and audit.organisation_id == a
        assert audit.detail["evidence_id"] == row.id
    (alert,) = calibration_alerts(runtime)
    assert alert.severity == "critical" and alert.organisation_id == a
    assert "is suspended for organisation Hospital A" in alert.message
    assert alert.detail["suspended"]["organisation_id"] == a
    assert alert.webhook_state == "sent"
    (posted,) = receiver[1]
    assert (
        posted["kind"] == "calibration"
        and "suspended for organisation Hospital A" in posted["message"]
    )
    assert (
        "automatic suspension: radsight-bright-region 1.0.0 suspended for organisation Hospital A"
        in (caplog.text)
    )

    # only a person reinstates: the next monitoring pass and a passing re-run leave it
    run_checks(runtime, registry)
    spots = [i % 2 == 0 for i in range(20)]
    good = write_reference(tmp_path / "good", [int(s) for s in spots], spots)
    _, passing, _ = run_evaluation(
        runtime, algorithm, good, created_by="qe", organisation="Hospital A", progress=False
    )
    assert passing["passed"] is True
    assert (state(runtime, a), state(runtime, b)) == ("suspended", "approved")
    # the re-test passes its AUROC bar but has 20 studies: the newest test is no evidence
    # for approval, so a supervisor reinstates by override, with a written reason
    admission.change_state(
        runtime,
        admission.SYSTEM,
        ALG,
        VER,
        "approved",
        organisation=a,
        reason="recalibrated and retested on 20 studies; full test booked",
        override=True,
    )
    assert state(runtime, a) == "approved"


def test_a_platform_wide_failure_suspends_platform_wide(runtime, registry, two_orgs, tmp_path):
    a, b = two_orgs
    ref = inverted_reference(tmp_path / "inverted")
    row, summary, _ = run_evaluation(
        runtime, registry.resolve(ALG), ref, created_by="qe", progress=False
    )
    assert row.organisation_id is None and summary["suspended"]["scope"] == "platform"
    assert (state(runtime, a), state(runtime, b)) == ("suspended", "suspended")
    (alert,) = calibration_alerts(runtime)
    assert alert.organisation_id is None and "suspended for platform" in alert.message


def test_an_inconclusive_failure_suspends_nothing(runtime, registry, two_orgs, tmp_path):
    a, b = two_orgs
    # 10 cases, labels half unrelated to the images: AUROC below the bar, CI reaching it
    spots = [i % 2 == 0 for i in range(10)]
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    ref = write_reference(tmp_path / "small", labels, spots)
    _, summary, _ = run_evaluation(
        runtime, registry.resolve(ALG), ref, created_by="qe", organisation=a, progress=False
    )
    auroc = summary["auroc"]
    assert summary["passed"] is False and auroc["value"] < 0.81 <= auroc["upper"]
    assert summary["suspended"] is None
    assert (state(runtime, a), state(runtime, b)) == ("approved", "approved")
    (alert,) = calibration_alerts(runtime)
    assert "Not conclusive" in alert.message and "nothing is suspended" in alert.message
    with runtime.db.session() as s:
        assert people.list_audit(s, scope=Scope.ALL, action="algorithm.suspended") == []


def test_the_setting_off_suspends_nothing(runtime, registry, two_orgs, tmp_path):
    a, _ = two_orgs
    runtime.settings.auto_suspend_on_calibration = False
    ref = inverted_reference(tmp_path / "inverted")
    _, summary, _ = run_evaluation(
        runtime, registry.resolve(ALG), ref, created_by="qe", organisation=a, progress=False
    )
    assert summary["passed"] is False and summary["suspended"] is None
    assert state(runtime, a) == "approved"
    (alert,) = calibration_alerts(runtime)
    assert "auto_suspend_on_calibration is off" in alert.message


def test_not_approved_there_means_nothing_to_suspend(runtime, registry, two_orgs, tmp_path):
    a, _ = two_orgs
    admission.change_state(
        runtime, admission.SYSTEM, ALG, VER, "shadow", organisation=a, reason="trial period"
    )
    ref = inverted_reference(tmp_path / "inverted")
    _, summary, _ = run_evaluation(
        runtime, registry.resolve(ALG), ref, created_by="qe", organisation=a, progress=False
    )
    assert summary["suspended"] is None and state(runtime, a) == "shadow"
    (alert,) = calibration_alerts(runtime)
    assert "not approved there" in alert.message


def bright_results(rt: Runtime, org: int, verdicts: list[str], start: int = 0) -> list[int]:
    """Analysed studies of the approved version with the AI verdicts given."""
    ids = results(rt, org, verdicts, start=start)
    with rt.db.session() as s:
        for r in s.scalars(select(ResultRow).where(ResultRow.study_id.in_(ids))):
            r.algorithm_name, r.algorithm_version = ALG, VER
    return ids


@pytest.mark.parametrize("setting", [True, False])
def test_a_critical_clinical_alert_suspends_when_the_setting_is_on(
    runtime, registry, two_orgs, receiver, client_for, setting
):
    a, b = two_orgs
    runtime.settings.auto_suspend_on_clinical = setting
    client = client_for(runtime)
    h = radiologist(runtime, a)
    # 50 diseased studies, the AI found 20: sensitivity 0.40, its whole CI under 0.80
    sick = bright_results(runtime, a, ["abnormal"] * 20 + ["normal"] * 30)
    judge(client, h, sick, "abnormal")
    run_checks(runtime, registry)
    with runtime.db.session() as s:
        alerts = quality.list_alerts(s, scope=Scope.ALL, kind="clinical")
    (alert,) = [x for x in alerts if x.detail["figure"] == "sensitivity"]
    assert alert.severity == "critical" and alert.organisation_id == a
    assert state(runtime, b) == "approved"
    if setting:
        assert state(runtime, a) == "suspended"
        assert "is suspended for organisation Hospital A" in alert.message
        assert alert.detail["suspended"]["organisation_id"] == a
        posted = [p for p in receiver[1] if p["id"] == alert.id]
        assert len(posted) == 1 and "suspended for organisation Hospital A" in posted[0]["message"]
        with runtime.db.session() as s:
            _, decided = admissionstore.state_for(s, ALG, VER, a)
            assert decided is not None and decided.actor == "radsight"
            assert decided.reason.startswith(
                "automatic suspension: clinical monitoring: sensitivity"
            )
        # the next pass keeps the alert open and the version suspended
        again = run_checks(runtime, registry)
        assert again["raised"] == [] and state(runtime, a) == "suspended"
    else:
        assert state(runtime, a) == "approved" and alert.detail["suspended"] is None


def test_technical_and_drift_alerts_never_suspend(runtime, registry, two_orgs):
    a, _ = two_orgs
    runtime.settings.auto_suspend_on_clinical = True
    with runtime.db.session() as s:
        quality.raise_alert(
            s,
            kind="drift",
            key="drift:x",
            message="shifted",
            algorithm_name=ALG,
            algorithm_version=VER,
            severity="critical",
        )
    run_checks(runtime, registry)
    assert state(runtime, a) == "approved"


def test_suspension_stops_delivery_for_that_organisation_only(
    runtime, registry, two_orgs, tmp_path
):
    """Needs the delivery gate (results of a suspended version are shadow: not delivered)."""
    from radsight.store import tenants

    a, b = two_orgs
    with runtime.db.session() as s:
        for org in (a, b):
            tenants.create_destination(s, org, "pacs", "PACS", "127.0.0.1", 11113)
    run_evaluation(
        runtime,
        registry.resolve(ALG),
        inverted_reference(tmp_path / "inverted"),
        created_by="qe",
        organisation=a,
        progress=False,
    )
    assert state(runtime, a) == "suspended"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    analyse_studies(runtime, registry, a, [bright_study(True, seed=1)], tmp_path / "a")
    analyse_studies(runtime, registry, b, [bright_study(True, seed=2)], tmp_path / "b")
    with runtime.db.session() as s:
        for org, mode, deliveries in ((a, "shadow", 0), (b, "clinical", 1)):
            (study,) = s.scalars(select(StudyRow).where(StudyRow.organisation_id == org))
            (result,) = s.scalars(select(ResultRow).where(ResultRow.study_id == study.id))
            assert result.mode == mode
            jobs = s.scalars(
                select(JobRow).where(JobRow.study_id == study.id, JobRow.kind == "deliver")
            ).all()
            assert len(jobs) == deliveries, f"organisation {org}"
