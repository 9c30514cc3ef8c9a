"""A fresh install gates radsight-mmg: shadow until a supervisor approves it (issue 14).

``radsight serve`` with the built-in rules and a dcmtk ``storescp`` as the PACS; real
four-view mammograms sent with ``storescu``. Before approval the study is analysed in
shadow mode: nothing reaches the PACS, a radiologist sees no AI result, a supervisor sees
the shadow one (marked "shadow - not delivered"). After an approval by override with a
written reason, the next study is delivered; the audit trail keeps both decisions.
"""

from __future__ import annotations

import pydicom
import pytest

from radsight.testing.peers import storescu
from tests.conftest import approve_with_override
from tests.e2e.test_dicom_flow import register, wait_for
from tests.e2e.test_mmg_pipeline import write_four_view_study

pytestmark = pytest.mark.slow

MMG, VERSION = "radsight-mmg", "1.1.0"
REASON = "reader study at General Hospital signed off by the screening lead"


# SQLite, a fresh install's database: the in-process admission tests
# (tests/pipeline/test_admission_gate.py, test_admission_safety.py, tests/monitor) run every
# rule on both databases; a shadow version, then approved, end to end on PostgreSQL is
# test_celery.py's test_celery_workers_keep_a_shadow_version_from_the_pacs_until_it_is_approved
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_mmg_runs_in_shadow_until_approved_by_override(
    tmp_path, make_server, storescp, shared_data, database_url
):
    server = make_server(
        workers=1,
        env={"RADSIGHT_ROUTING_RULES": "builtin", "RADSIGHT_DATABASE_URL": database_url},
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    radiologist = server.make_token("radiologist", "--org", "General Hospital", name="reader")
    supervisor = server.make_token("supervisor", "--org", "General Hospital", name="lead")

    first, _ = write_four_view_study(tmp_path / "first", shared_data)
    assert storescu(server.dicom_port, tmp_path / "first", calling="MODALITY1").returncode == 0

    def study_id(uid: str) -> int | None:
        with server.http() as http:
            ids = [
                s["id"] for s in http.get("/api/studies").json() if s["study_instance_uid"] == uid
            ]
        return ids[0] if ids else None

    def settled(uid: str) -> dict | None:
        sid = study_id(uid)
        if sid is None:
            return None
        with server.http() as http:
            st = http.get(f"/api/studies/{sid}").json()
        return st if st["state"] in ("analysed", "not_analysed", "failed") else None

    shadow_study = wait_for(lambda: settled(first), 180, "the first study analysed")
    sid = shadow_study["id"]
    assert shadow_study["state"] == "not_analysed"
    assert shadow_study["state_reason"] == (
        f"no approved algorithm analysed this study: {MMG} {VERSION} ran in shadow mode "
        "(results for supervisors)"
    )
    with server.http(supervisor) as http:
        seen = http.get(f"/api/studies/{sid}/results").json()
        page = http.get(f"/studies/{sid}").text
    assert [
        (r["algorithm_name"], r["algorithm_version"], r["status"], r["mode"]) for r in seen
    ] == [(MMG, VERSION, "analysed", "shadow")]
    assert "shadow - not delivered" in page
    with server.http(radiologist) as http:
        assert http.get(f"/api/studies/{sid}/results").json() == []
        page = http.get(f"/studies/{sid}").text
        (row,) = [s for s in http.get("/api/worklist").json()["studies"] if s["id"] == sid]
    # no result card, no marks: only the study's status says why
    assert "data-result-id" not in page and "shadow - not delivered" not in page
    assert "No AI result yet: not analysed: no approved algorithm analysed this study" in page
    assert (row["status"], row["ai_score"]) == ("not_analysed", None)
    assert storescp.files() == []

    approve_with_override(server, f"{MMG}@{VERSION}", REASON)
    second, _ = write_four_view_study(tmp_path / "second", shared_data)
    assert storescu(server.dicom_port, tmp_path / "second", calling="MODALITY1").returncode == 0

    def sent() -> list | None:  # storescp has written every object once the job is done
        with server.http() as http:
            jobs = http.get("/api/jobs", params={"kind": "deliver"}).json()
        return jobs if jobs and all(j["state"] == "done" for j in jobs) else None

    assert len(wait_for(sent, 180, "the second study's result delivered")) == 1
    # an SR and one SC per image, of the second study only: approval sends nothing old
    assert sorted(at_pacs(storescp)) == [
        (second, "OT"),
        (second, "OT"),
        (second, "OT"),
        (second, "OT"),
        (second, "SR"),
    ]
    with server.http(radiologist) as http:
        sid2 = study_id(second)
        (result,) = http.get(f"/api/studies/{sid2}/results").json()
    assert (result["algorithm_version"], result["mode"]) == (VERSION, "clinical")

    with server.http() as http:
        audit = http.get("/api/audit", params={"limit": 1000}).json()
    decisions = [
        (a["action"], a["detail"]["state"], a["detail"]["override"], a["detail"]["reason"])
        for a in audit
        if a["action"].startswith("algorithm.") and a["detail"].get("algorithm") == MMG
    ]
    assert ("algorithm.approved", "approved", True, REASON) in decisions
    (shipped,) = [d for d in decisions if d[0] == "algorithm.shadow"]
    assert shipped[2] is False
    assert shipped[3].startswith("its shipped evidence does not pass the acceptance rule")


def at_pacs(storescp) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(Study Instance UID, Modality) of every object the PACS received."""
    return [
        (str(d.StudyInstanceUID), str(d.Modality))
        for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in storescp.files())
    ]
