"""Thresholds per algorithm version and organisation: recorded, picked, used by the pipeline."""

from __future__ import annotations

from click.testing import CliRunner

from radsight.algorithms.bright_region import BrightRegionAlgorithm
from radsight.algorithms.contract import Analysis, Finding
from radsight.cli.main import cli
from radsight.dicom.synthetic import make_radiograph
from radsight.monitor.service import recalibration_report, run_evaluation
from radsight.store import quality
from radsight.store import results as resultstore
from radsight.store.scope import Scope

from .conftest import analyse_studies, bright_study, dicom_bytes, make_org, token


def write_reference(root, n=40):  # type: ignore[no-untyped-def]
    root.mkdir(parents=True, exist_ok=True)
    rows = ["study_instance_uid,label"]
    for i in range(n):
        positive = i % 2 == 0
        ds = make_radiograph(bright_spot=(0.3, 0.5, 0.1) if positive else None, seed=100 + i)
        (root / f"{i}.dcm").write_bytes(dicom_bytes(ds))
        rows.append(f"{ds.StudyInstanceUID},{int(positive)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_newest_threshold_wins_and_an_organisation_overrides_the_default(runtime):
    org = make_org(runtime)
    other = make_org(runtime, "Rural Clinic", "South")
    with runtime.db.session() as s:
        for value, org_id in ((0.4, None), (0.45, None), (0.7, org)):
            quality.set_threshold(
                s,
                algorithm_name="a",
                algorithm_version="1",
                value=value,
                method="manual",
                created_by="qe",
                reason="test",
                organisation_id=org_id,
            )
        quality.set_threshold(
            s,
            algorithm_name="a",
            algorithm_version="1",
            value=0.2,
            method="manual",
            created_by="qe",
            finding_key="nodule",
        )
        quality.set_threshold(
            s,
            algorithm_name="a",
            algorithm_version="2",
            value=0.9,
            method="manual",
            created_by="qe",
        )
    with runtime.db.session() as s:
        assert quality.stored_thresholds(s, "a", "1") == {"study": 0.45, "nodule": 0.2}
        assert quality.stored_thresholds(s, "a", "1", org) == {"study": 0.7, "nodule": 0.2}
        assert quality.stored_thresholds(s, "a", "1", other) == {"study": 0.45, "nodule": 0.2}
        history = quality.list_thresholds(
            s, scope=Scope.ALL, algorithm_name="a", algorithm_version="1"
        )
        assert [h.value for h in history] == [0.2, 0.7, 0.45, 0.4]  # every change kept
    with runtime.db.session() as s:
        for bad in ({"value": 1.5, "method": "manual"}, {"value": 0.5, "method": "guess"}):
            try:
                quality.set_threshold(
                    s, algorithm_name="a", algorithm_version="1", created_by="qe", **bad
                )  # type: ignore[arg-type]
            except ValueError as exc:
                assert "threshold" in str(exc) or "method" in str(exc)
            else:
                raise AssertionError(f"{bad} was accepted")


def test_pick_on_an_evaluation_and_the_pipeline_uses_the_threshold_in_force(tmp_path, rt, registry):
    ref = write_reference(tmp_path / "ref")
    runner = CliRunner()
    base = ["--data-dir", str(rt.settings.data_dir)]
    res = runner.invoke(
        cli,
        [
            *base,
            "evaluate",
            "--algorithm",
            "radsight-bright-region",
            "--reference",
            str(ref),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        [
            *base,
            "threshold",
            "pick",
            "radsight-bright-region@1.0.0",
            "--method",
            "sensitivity=0.95",
            "--evaluation",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "recorded as threshold 1" in res.output and "sensitivity 0.950" in res.output
    org = make_org(rt)
    make_org(rt, "Rural Clinic", "South")
    res = runner.invoke(
        cli,
        [
            *base,
            "threshold",
            "set",
            "radsight-bright-region@1.0.0",
            "0.95",
            "--organisation",
            "City Hospital",
            "--reason",
            "too many recalls",
            "--finding",
            "all",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        [
            *base,
            "threshold",
            "set",
            "radsight-bright-region@1.0.0",
            "0.6",
            "--reason",
            "margin below the picked value",
            "--finding",
            "all",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "in force (routing rules' thresholds aside): bright-region 0.6, study 0.6" in res.output
    listing = runner.invoke(cli, [*base, "threshold", "list", "radsight-bright-region"]).output
    assert "target_sensitivity=0.95" in listing and "too many recalls" in listing
    assert "cli:" in listing
    # a positive study (score 0.86): above the newest default, below City Hospital's own 0.95
    with rt.db.session() as s:
        picked = quality.stored_thresholds(s, "radsight-bright-region", "1.0.0")["study"]
    assert picked == 0.6
    analyse_studies(rt, registry, org, [bright_study(True, 1)], tmp_path)
    analyse_studies(rt, registry, org + 1, [bright_study(True, 2)], tmp_path)
    with rt.db.session() as s:
        mine, theirs = sorted(
            resultstore.list_results(s, scope=Scope.ALL), key=lambda r: r.organisation_id
        )
    assert mine.report["study_threshold"] == 0.95 and mine.verdict == "normal"
    assert theirs.report["study_threshold"] == picked and theirs.verdict == "abnormal"


class ShiftedVersion(BrightRegionAlgorithm):
    """A new version whose scores are squeezed: the old threshold no longer fits."""

    version = "2.0.0"

    def analyse(self, study):  # type: ignore[no-untyped-def]
        a = super().analyse(study)
        p = round(a.study_score * 0.55, 6)
        return Analysis((Finding("bright-region", p, a.findings[0].regions),), p)


def test_recalibration_report_shows_the_old_threshold_failing_on_the_new_version(
    tmp_path, rt, client_for
):
    ref = write_reference(tmp_path / "ref", 30)
    old, new = BrightRegionAlgorithm(), ShiftedVersion()
    row, summary, _ = run_evaluation(rt, new, ref, created_by="qe", progress=False)
    assert summary["auroc"]["value"] == 1.0  # same ranking, other scale
    with rt.db.session() as s:
        rep = recalibration_report(s, old, new, row.id)
    assert rep["old"]["threshold"] == 0.5 and rep["old"]["sensitivity"]["value"] == 0.0
    assert rep["picked"]["sensitivity"]["value"] == 1.0
    assert any("significantly worse in sensitivity" in v for v in rep["verdict"])


def test_thresholds_through_the_api(tmp_path, rt, client_for):
    org = make_org(rt)
    other = make_org(rt, "Rural Clinic", "South")
    client = client_for(rt)
    body = {
        "algorithm": "radsight-bright-region@1.0.0",
        "value": 0.6,
        "reason": "site policy",
        "organisation": "City Hospital",
    }
    assert (
        client.post("/api/thresholds", json=body, headers=token(rt, "radiologist", org)).status_code
        == 403
    )
    r = client.post("/api/thresholds", json=body, headers=token(rt, "org_admin", org, "a"))
    assert r.status_code == 201 and r.json()["created_by"] == "a-org_admin"
    r = client.post(
        "/api/thresholds",
        json={**body, "organisation": None},
        headers=token(rt, "org_admin", other, "b"),
    )
    assert r.status_code == 403  # the default is the platform admin's
    r = client.post(
        "/api/thresholds",
        json={**body, "finding_key": "nope"},
        headers=token(rt, "admin", None, "c"),
    )
    assert r.status_code == 404
    h = token(rt, "radiologist", org, "d")
    r = client.get(
        "/api/thresholds/in-force?algorithm=radsight-bright-region&organisation=City Hospital",
        headers=h,
    ).json()
    assert r["thresholds"]["study"] == 0.6 and r["thresholds"]["bright-region"] == 0.5
    assert (
        client.get(
            "/api/thresholds/in-force?algorithm=radsight-bright-region&organisation=Rural Clinic",
            headers=h,
        ).status_code
        == 404
    )
    assert [t["value"] for t in client.get("/api/thresholds", headers=h).json()] == [0.6]
