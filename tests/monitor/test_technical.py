"""Technical monitoring: planted output defects and job failures are all found and counted."""

from __future__ import annotations

import io

import pydicom
from pydantic import SecretStr

from radsight.monitor.checks import run_checks, technical_report
from radsight.store import jobs as jobstore
from radsight.store import quality, tenants
from radsight.store import results as resultstore
from radsight.store.scope import Scope
from radsight.store.tables import JobRow, ResultObjectRow, ResultRow

from .conftest import analyse_studies, bright_study, make_org, token


def the_sr(result: ResultRow) -> ResultObjectRow:
    (sr,) = [o for o in result.objects if o.role == "sr"]
    return sr


def plant_defects(rt, org):  # type: ignore[no-untyped-def]
    with rt.db.session() as s:
        r = sorted(resultstore.list_results(s, scope=Scope.ALL), key=lambda x: x.id)
        dest = tenants.create_destination(s, org, "pacs", "PACS", "127.0.0.1", 1)
    # 1: an SR that is not DICOM at all
    rt.files.put(the_sr(r[0]).storage_key, b"this is not an SR")
    # 2: an SR that names another study
    ds = pydicom.dcmread(io.BytesIO(rt.files.get(the_sr(r[1]).storage_key)))
    ds.StudyInstanceUID = "1.2.3.4.5.6.7"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    rt.files.put(the_sr(r[1]).storage_key, buf.getvalue())
    with rt.db.session() as s:
        # 3: its Secondary Captures missing
        row = s.get(ResultRow, r[2].id)
        row.objects = [o for o in row.objects if o.role != "sc"]
        # 4: a delivery that failed for good
        job, _ = jobstore.create_job(
            s,
            dedup_key="deliver-x",
            organisation_id=org,
            kind="deliver",
            study_id=r[3].study_id,
            result_id=r[3].id,
            destination_id=dest.id,
        )
        job.state, job.error_code = "dead", "delivery_error"
        # 5: a dead-lettered job that ran past its time limit, 6: a failed job
        for name, state, code in (
            ("test-hang", "dead", "algorithm_timeout"),
            ("test-poison", "failed", "encoding_error"),
        ):
            j, _ = jobstore.create_job(
                s,
                dedup_key=f"analyse-{name}",
                organisation_id=org,
                kind="analyse",
                study_id=r[4].study_id,
                algorithm_name=name,
                algorithm_version="1.0.0",
            )
            j.state, j.error_code = state, code
    return r


def test_planted_defects_are_all_detected_and_counted(tmp_path, rt, registry, client_for):
    org = make_org(rt)
    analyse_studies(rt, registry, org, [bright_study(i % 2 == 0, i) for i in range(6)], tmp_path)
    clean = technical_report(rt, Scope.ALL)
    assert clean["totals"]["results"] == 6
    assert {
        k: clean["totals"][k]
        for k in (
            "sr_invalid",
            "wrong_study",
            "sc_count_mismatch",
            "delivery_failed",
            "failed",
            "dead",
        )
    } == dict.fromkeys(
        ("sr_invalid", "wrong_study", "sc_count_mismatch", "delivery_failed", "failed", "dead"), 0
    )
    r = plant_defects(rt, org)
    rep = technical_report(rt, Scope.ALL)
    t = rep["totals"]
    assert (t["sr_invalid"], t["wrong_study"], t["sc_count_mismatch"], t["delivery_failed"]) == (
        1,
        1,
        1,
        1,
    )
    assert (t["failed"], t["dead"], t["time_limit"]) == (1, 1, 1)
    assert rep["defective_results"] == {
        str(r[0].id): ["sr_invalid"],
        str(r[1].id): ["wrong_study"],
        str(r[2].id): ["sc_count_mismatch"],
    }
    bright = next(g for g in rep["groups"] if g["algorithm_name"] == "radsight-bright-region")
    assert bright["results"] == 6 and bright["rates"]["sr_invalid"] == round(1 / 6, 4)
    assert bright["turnaround_s"]["ready_to_analysed"]["n"] == 6
    # alerts: one per defect kind and group, logged and listed
    summary = run_checks(rt, registry)
    kinds = sorted(a["message"].split(" in the last")[0] for a in summary["raised"])
    assert kinds == [
        "1 dead",
        "1 delivery failed",
        "1 failed",
        "1 sc count mismatch",
        "1 sr invalid",
        "1 time limit",
        "1 wrong study",
    ]
    assert run_checks(rt, registry)["raised"] == []  # deduplicated while open
    # Prometheus metrics, to a signed-in principal and to the scrape token
    client = client_for(rt)
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=token(rt, "supervisor", org)).text
    assert (
        'radsight_output_defects{algorithm="radsight-bright-region",defect="sr_invalid",'
        'organisation="City Hospital",version="1.0.0"} 1.0'
    ) in text
    assert 'radsight_alerts_open{kind="technical"} 7.0' in text
    rt.settings.metrics_token = SecretStr("scrape-me")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert (
        "radsight_jobs_by_state"
        in client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text
    )
    # another tenant sees none of it
    other = make_org(rt, "Rural Clinic", "South")
    h = token(rt, "org_admin", other, "o")
    assert client.get("/api/monitoring/technical", headers=h).json()["totals"]["results"] == 0
    assert 'organisation="City Hospital"' not in client.get("/metrics", headers=h).text
    # a repaired output clears its alert on the next pass
    with rt.db.session() as s:
        s.get(ResultRow, r[2].id).objects += [
            ResultObjectRow(
                position=o.position,
                role=o.role,
                sop_class_uid=o.sop_class_uid,
                series_instance_uid=o.series_instance_uid,
                sop_instance_uid=o.sop_instance_uid,
                storage_key=o.storage_key,
            )
            for o in r[2].objects
            if o.role == "sc"
        ]
    run_checks(rt, registry)
    with rt.db.session() as s:
        open_keys = {
            a.key.split(":")[1] for a in quality.list_alerts(s, scope=Scope.ALL, open_only=True)
        }
    assert "sc_count_mismatch" not in open_keys and "sr_invalid" in open_keys


def test_jobs_table_untouched_by_monitoring(tmp_path, rt, registry):
    org = make_org(rt)
    analyse_studies(rt, registry, org, [bright_study(True, 1)], tmp_path)
    with rt.db.session() as s:
        before = [(j.id, j.state) for j in s.query(JobRow).all()]
    run_checks(rt, registry)
    with rt.db.session() as s:
        assert [(j.id, j.state) for j in s.query(JobRow).all()] == before


def test_each_object_is_checked_by_its_role_not_its_position(tmp_path, rt, registry):
    """The SR stored last and a capture first: each still gets its role's check."""
    org = make_org(rt)
    analyse_studies(rt, registry, org, [bright_study(True, 1), bright_study(False, 2)], tmp_path)
    with rt.db.session() as s:
        first, second = sorted(resultstore.list_results(s, scope=Scope.ALL), key=lambda x: x.id)
        for row in (s.get(ResultRow, first.id), s.get(ResultRow, second.id)):
            sr, *captures = row.objects
            assert (sr.role, [c.role for c in captures]) == ("sr", ["sc"])
            # positions swapped: the capture comes first, the SR last
            sr.position = -1
            s.flush()
            for i, c in enumerate(captures):
                c.position = i
            s.flush()
            sr.position = len(captures)
            s.flush()
    # in the first result, the capture names another study: an SC header defect only
    (capture,) = [o for o in first.objects if o.role == "sc"]
    ds = pydicom.dcmread(io.BytesIO(rt.files.get(capture.storage_key)))
    ds.StudyInstanceUID = "1.2.3.4.5.6.7"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    rt.files.put(capture.storage_key, buf.getvalue())
    # the second is untouched: nothing is wrong with it although its SR is now last
    with rt.db.session() as s:
        assert [o.role for o in s.get(ResultRow, second.id).objects] == ["sc", "sr"]
    rep = technical_report(rt, Scope.ALL)
    assert rep["defective_results"] == {str(first.id): ["wrong_study"]}
    # the SR gone to the end of the list is still the SR: break it, and it is sr_invalid
    rt.files.put(the_sr(second).storage_key, b"not an SR")
    rep = technical_report(rt, Scope.ALL)
    assert rep["defective_results"] == {
        str(first.id): ["wrong_study"],
        str(second.id): ["sr_invalid"],
    }
