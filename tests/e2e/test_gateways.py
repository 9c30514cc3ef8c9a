"""Several gateways behind one PostgreSQL database, one shared store and one worker."""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from radsight.testing.peers import RadsightProcess, storescu
from tests.conftest import write_rules
from tests.e2e.test_celery import broker_url  # noqa: F401 - the fixture, a vhost per test
from tests.e2e.test_crash_recovery import write_series
from tests.e2e.test_dicom_flow import SECONDARY_CAPTURE, register, wait_for

pytestmark = pytest.mark.slow

STUDIES_PER_GATEWAY = 4


def gateway(make_server, tmp_path: Path, name: str, database_url: str, broker: str):  # type: ignore[no-untyped-def]
    """``radsight serve --no-workers`` on the shared database, broker and object store."""
    return make_server(
        name,
        workers=0,
        env={
            "RADSIGHT_ROUTING_RULES": str(
                write_rules(tmp_path / "rules.yaml", ["radsight-bright-region"])
            ),
            "RADSIGHT_DATABASE_URL": database_url,
            "RADSIGHT_JOB_RUNNER": "celery",
            "RADSIGHT_BROKER_URL": broker,
            "RADSIGHT_OBJECT_STORE": str(tmp_path / "shared-objects"),
            # every study's quiet period ends in the same scheduler ticks on both gateways
            "RADSIGHT_QUIET_PERIODS": '{"cxr": 1.0, "flg": 1.0}',
            "RADSIGHT_DEFAULT_QUIET_PERIOD": "1.0",
        },
    )


def send_all(gw: RadsightProcess, folders: list[Path], results: dict[str, int]) -> None:
    for folder in folders:
        results[folder.name] = storescu(gw.dicom_port, folder, calling="MODALITY1").returncode


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_gateways_analyse_and_deliver_every_study_exactly_once(
    tmp_path,
    database_url,  # before make_server: the gateways stop before the database is dropped
    broker_url,  # noqa: F811
    make_server,
    storescp,
):
    gateways = [gateway(make_server, tmp_path, f"gw{i}", database_url, broker_url) for i in (1, 2)]
    register(gateways[0], [("archive", storescp.ae_title, storescp.port)])  # one database
    for gw in gateways:
        gw.start()
    gateways[0].start_worker(concurrency=1)

    sent: dict[str, list[pydicom.Dataset]] = {}
    plan: list[list[Path]] = [[], []]
    for i in range(2 * STUDIES_PER_GATEWAY):
        folder = tmp_path / "studies" / f"s{i}"
        sent[folder.name] = write_series(folder, 2, rows=256)
        plan[i % 2].append(folder)
    codes: dict[str, int] = {}
    senders = [
        threading.Thread(target=send_all, args=(gw, folders, codes))
        for gw, folders in zip(gateways, plan, strict=True)
    ]
    for t in senders:
        t.start()
    for t in senders:
        t.join(300)
    assert codes == dict.fromkeys(sent, 0)

    study_uids = {str(series[0].StudyInstanceUID) for series in sent.values()}

    def delivered() -> list[pydicom.Dataset] | None:
        found = [pydicom.dcmread(p, stop_before_pixels=True) for p in storescp.files()]
        srs = [d for d in found if d.Modality == "SR"]
        return found if len(srs) >= len(study_uids) else None

    wait_for(delivered, 180, "an SR for every study")

    def settled() -> list[dict] | None:
        with gateways[1].http() as http:
            jobs = http.get("/api/jobs", params={"limit": 1000}).json()
        done = len(jobs) == 2 * len(study_uids) and all(j["state"] == "done" for j in jobs)
        return jobs if done else None

    jobs = wait_for(settled, 120, "every analysis and delivery job done")
    received = [pydicom.dcmread(p, stop_before_pixels=True) for p in storescp.files()]

    # one SR per study, one SC per image: nothing analysed or delivered twice
    sr_per_study = Counter(str(d.StudyInstanceUID) for d in received if d.Modality == "SR")
    assert sr_per_study == dict.fromkeys(study_uids, 1)
    sc_count = sum(d.SOPClassUID == SECONDARY_CAPTURE for d in received)
    assert sc_count == 2 * len(study_uids)
    assert Counter((j["kind"], j["study_id"]) for j in jobs).most_common(1)[0][1] == 1
    assert all(j["attempts"] == 1 for j in jobs), "no job ran twice"

    # both gateways see the same studies and the same results (one database)
    views = []
    for gw in gateways:
        with gw.http() as http:
            studies = http.get("/api/studies", params={"limit": 1000}).json()
            results = http.get("/api/results", params={"limit": 1000}).json()
        views.append(
            (
                sorted((s["study_instance_uid"], s["num_instances"]) for s in studies),
                sorted(r["id"] for r in results),
            )
        )
        assert {s["study_instance_uid"] for s in studies} == study_uids
        assert all(s["num_instances"] == 2 for s in studies)
        assert len(results) == len(study_uids)
        assert all(r["status"] == "analysed" for r in results)
    assert views[0] == views[1]

    # each study was assembled and routed by one gateway only, and no tick failed
    logs = "".join(gw.log() for gw in gateways)
    routed = Counter(re.findall(r"study ([0-9.]+) ready", logs))
    assert routed == dict.fromkeys(study_uids, 1), routed
    assert "scheduler tick failed" not in logs
    assert "Traceback" not in logs
    # both gateways took part in receiving
    for gw in gateways:
        assert "stored, 0 failed" in gw.log()
