"""A fresh install puts every built-in algorithm through the admission gate: the evidence it
ships is stored as an evaluation and judged by the acceptance rule in force (issue 14,
point 4). With the default rule radsight-bright-region, -cxr and -flg start approved
platform-wide; radsight-mmg, -ct-brain and -ct-chest start in shadow; an exported
torchxrayvision model, which ships none, starts registered. The drift baseline is never the
shipped evidence (it has no input features)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radsight.admission import mode_of
from radsight.algorithms.registry import Registry
from radsight.algorithms.xrv import FORMAT, TorchXRayVisionAlgorithm
from radsight.config import load_settings
from radsight.monitor.admission import PLATFORM, current_state, register_installed
from radsight.monitor.checks import drift_report
from radsight.monitor.html import evaluation_report
from radsight.runtime import Runtime
from radsight.store import quality, tenants
from radsight.store.admission import state_for, state_history
from radsight.store.people import list_audit
from radsight.store.scope import Scope
from radsight.store.tables import AlgorithmStateRow, AuditEventRow, EvaluationRow

SHIPPED = "shipped with the package"
#: the built-ins and the state each starts in under the default acceptance rule
DEFAULT_START = {
    "radsight-bright-region": "approved",
    "radsight-cxr": "approved",
    "radsight-flg": "approved",
    "radsight-mmg": "shadow",
    "radsight-ct-brain": "shadow",
    "radsight-ct-chest": "shadow",
}


def versions(registry: Registry) -> dict[str, str]:
    return {a.name: a.version for a in registry.all() if a.name in DEFAULT_START}


def started(rt: Runtime, registry: Registry) -> dict[str, str]:
    with rt.db.session() as s:
        return {
            name: current_state(s, name, version) for name, version in versions(registry).items()
        }


def counts(rt: Runtime) -> tuple[int, int, int]:
    with rt.db.session() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(t))
            for t in (AlgorithmStateRow, EvaluationRow, AuditEventRow)
        )


def test_a_fresh_install_admits_the_built_ins_by_their_shipped_evidence(runtime, registry):
    assert set(versions(registry)) == set(DEFAULT_START)  # every built-in is installed
    register_installed(runtime, registry)
    assert started(runtime, registry) == DEFAULT_START
    with runtime.db.session() as s:
        for name, version in versions(registry).items():
            (row,) = state_history(s, name, version, scope=Scope.ALL)
            # platform-wide, by the platform, with the shipped evaluation as its evidence
            assert (row.organisation_id, row.region_id, row.actor) == (None, None, PLATFORM)
            ev = s.get(EvaluationRow, row.evidence_id)
            assert ev is not None and ev.created_by == SHIPPED and ev.state == "done"
            assert (ev.algorithm_name, ev.algorithm_version) == (name, version)
            assert ev.summary["shipped"] is True
            assert ev.passed is (DEFAULT_START[name] == "approved")
            assert ev.num_studies == ev.summary["num_studies"] > 0
            if DEFAULT_START[name] == "approved":
                assert row.reason == "its shipped evidence passes the acceptance rule in force"
                assert ev.summary["failures"] == []
            else:
                assert row.reason.startswith("its shipped evidence does not pass")
                assert ev.summary["failures"] and ev.summary["failures"][0] in row.reason
        audit = list_audit(s, scope=Scope.ALL, limit=50)
        by_algorithm = {
            a.detail["algorithm"]: a for a in audit if a.action.startswith("algorithm.")
        }
        for name, state in DEFAULT_START.items():
            entry = by_algorithm[name]
            assert entry.action == f"algorithm.{state}" and entry.actor == PLATFORM
            assert entry.detail["scope"] == "platform" and entry.detail["version"]


def test_the_named_reasons_of_the_built_ins_in_shadow(runtime, registry):
    register_installed(runtime, registry)
    v = versions(registry)
    with runtime.db.session() as s:
        reasons = {
            name: state_history(s, name, v[name], scope=Scope.ALL)[0].reason
            for name in ("radsight-mmg", "radsight-ct-brain", "radsight-ct-chest")
        }
    assert "242 studies; the acceptance rule needs at least 400" in reasons["radsight-mmg"]
    assert "AUROC 0.648 is below the bar 0.81" in reasons["radsight-mmg"]
    assert "200 studies; the acceptance rule needs at least 400" in reasons["radsight-ct-brain"]
    assert "AUROC" not in reasons["radsight-ct-brain"]  # 0.965: only the set is too small
    assert "the evaluation has no AUROC" in reasons["radsight-ct-chest"]
    assert "0.0% of the studies are negative" in reasons["radsight-ct-chest"]


def test_an_organisation_gets_the_built_ins_in_their_starting_mode(runtime, registry):
    register_installed(runtime, registry)
    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "City Hospital", "North").id
        modes = {
            name: mode_of(state_for(s, name, version, org)[0])
            for name, version in versions(registry).items()
        }
    assert modes == {
        name: "clinical" if state == "approved" else "shadow"
        for name, state in DEFAULT_START.items()
    }


def test_the_stored_evidence_reads_as_a_calibration_report(runtime, registry):
    """What a supervisor opens from a version's page: every built-in's shipped evidence,
    partial figures included (ct-chest has no AUROC), renders with its verdict and note."""
    register_installed(runtime, registry)
    with runtime.db.session() as s:
        for name, version in versions(registry).items():
            (row,) = state_history(s, name, version, scope=Scope.ALL)
            ev = s.get(EvaluationRow, row.evidence_id)
            assert ev is not None
            page = evaluation_report(ev.summary, ev.id)
            verdict = "PASSED" if DEFAULT_START[name] == "approved" else "FAILED"
            assert f'<span class="result-{verdict[:4].lower()}">{verdict}</span>' in page
            assert 'id="evaluation-shipped">Shipped with the package' in page
            assert ("Headline figures" in page) is ("auroc" in ev.summary)
            for failure in ev.summary["failures"]:
                assert failure in page


def test_a_second_start_changes_nothing(runtime, registry):
    register_installed(runtime, registry)
    before = counts(runtime)
    assert register_installed(runtime, registry) == []
    assert counts(runtime) == before
    assert started(runtime, registry) == DEFAULT_START


def test_a_supervisors_decision_survives_a_restart(runtime, registry):
    """A restart re-registers nothing: a version with any recorded state is left alone."""
    from radsight.monitor.admission import SYSTEM, change_state

    register_installed(runtime, registry)
    cxr = versions(registry)["radsight-cxr"]
    change_state(runtime, SYSTEM, "radsight-cxr", cxr, "suspended", reason="local audit under way")
    register_installed(runtime, registry)
    with runtime.db.session() as s:
        assert current_state(s, "radsight-cxr", cxr) == "suspended"


@pytest.fixture
def strict_runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """A fresh install whose settings raise the AUROC bar above the chest model's 0.962."""
    settings = load_settings(
        None, data_dir=tmp_path / "data", database_url=database_url, acceptance_min_auroc=0.97
    )
    rt = Runtime.open(settings)
    yield rt
    rt.close()


def test_the_rule_in_force_judges_not_the_files_own_verdict(strict_runtime, registry):
    for name in ("radsight-cxr", "radsight-flg"):  # the files say they passed (at 0.81)
        evidence = registry.resolve(name).shipped_evidence()
        assert evidence is not None and evidence["passed"] is True
    register_installed(strict_runtime, registry)
    assert started(strict_runtime, registry) == DEFAULT_START | {
        "radsight-cxr": "shadow",
        "radsight-flg": "shadow",
    }
    with strict_runtime.db.session() as s:
        row = state_history(s, "radsight-cxr", versions(registry)["radsight-cxr"], scope=Scope.ALL)
        assert "AUROC 0.962 is below the bar 0.97" in row[0].reason
        ev = s.get(EvaluationRow, row[0].evidence_id)
        assert ev is not None and ev.passed is False and ev.created_by == SHIPPED


def xrv_model(folder: Path) -> Path:
    """An exported model directory as ``radsight_train export-xrv`` writes it. The network
    file is a placeholder: registration reads the description only, nothing is analysed."""
    folder.mkdir()
    (folder / "xrv.onnx").write_bytes(b"")
    config = {
        "format": FORMAT,
        "name": "xrv-densenet121-res224-all",
        "version": "1.0.0",
        "weights": "densenet121-res224-all",
        "model": "xrv.onnx",
        "pathologies": ["Pneumonia", "Effusion"],
        "op_threshs": [0.5, 0.5],
        "input": {"size": 224},
        "study_types": ["cxr"],
    }
    (folder / "xrv.json").write_text(json.dumps(config))
    return folder


def test_exported_weights_ship_no_evidence_and_start_registered(runtime, tmp_path):
    algorithm = TorchXRayVisionAlgorithm(xrv_model(tmp_path / "xrv"))
    assert algorithm.shipped_evidence() is None
    register_installed(runtime, Registry([algorithm]))
    with runtime.db.session() as s:
        (row,) = state_history(s, algorithm.name, "1.0.0", scope=Scope.ALL)
        assert (row.state, row.evidence_id) == ("registered", None)
        assert "ships no evidence" in row.reason
        assert mode_of(row.state) == "shadow"  # routed studies run, nothing is delivered
        assert s.scalar(select(func.count()).select_from(EvaluationRow)) == 0


def site_calibration_test(rt: Runtime, name: str, version: str) -> int:
    """A site's own calibration test: its cases carry their input features."""
    cases = [
        {
            "id": str(i),
            "label": i % 2,
            "score": (i % 10) / 10,
            "verdict": "abnormal" if i % 2 else "normal",
            "features": {"manufacturer": "GE", "pixel_spacing": 0.14, "rows": 2048},
        }
        for i in range(40)
    ]
    with rt.db.session() as s:
        ev = quality.create_evaluation(s, name, version, "site reference", "qe")
        quality.finish_evaluation(s, ev.id, summary={"cases": cases}, passed=True, num_studies=40)
        return ev.id


def test_shipped_evidence_is_never_the_drift_baseline(runtime, registry):
    version = versions(registry)["radsight-cxr"]
    site = site_calibration_test(runtime, "radsight-cxr", version)  # before the first start
    register_installed(runtime, registry)
    with runtime.db.session() as s:
        shipped = quality.latest_evaluation(s, "radsight-cxr", version)
        assert shipped is not None and shipped.created_by == SHIPPED and shipped.id > site
    assert (
        drift_report(runtime, "radsight-cxr", version, scope=Scope.ALL)["baseline_evaluation_id"]
        == site
    )
    # a version with shipped evidence only has no baseline yet
    rep = drift_report(runtime, "radsight-flg", versions(registry)["radsight-flg"], scope=Scope.ALL)
    assert rep["baseline_evaluation_id"] is None and rep["status"].startswith("no baseline")
