"""``radsight algorithm ...`` as an operator uses it, on SQLite and PostgreSQL.

Evidence is a real :func:`radsight.monitor.calibration.summarise` output over seeded
synthetic cases (the figures a calibration test stores), so the acceptance rule judges
exactly what ``radsight evaluate`` would leave in the store.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from radsight.cli.main import cli
from radsight.monitor import calibration
from radsight.monitor.admission import acceptance_rule
from radsight.runtime import Runtime
from radsight.store import people, quality
from radsight.store.scope import Scope
from tests.conftest import shipped_evaluation

BRIGHT = "radsight-bright-region@1.0.0"
MMG = "radsight-mmg@1.1.0"


def store_evaluation(rt: Runtime, ref: str, n: int, seed: int = 7) -> int:
    """A finished calibration test of ``ref`` on ``n`` synthetic cases, half positive, that
    separates well (AUROC about 0.95): it passes the acceptance rule but for its size."""
    name, _, version = ref.partition("@")
    rng = np.random.default_rng(seed)
    results = []
    for i in range(n):
        label = i % 2
        score = float(np.clip(rng.normal(0.7 if label else 0.3, 0.15), 0, 1))
        results.append(
            calibration.CaseResult(
                f"case-{i}", label, score, "abnormal" if score >= 0.5 else "normal"
            )
        )
    summary = calibration.summarise(
        name, version, f"synthetic {n}", results, {"study": 0.5}, acceptance_rule(rt.settings)
    )
    with rt.db.session() as s:
        row = quality.create_evaluation(s, name, version, f"synthetic {n}", "qe")
        quality.finish_evaluation(
            s, row.id, summary=summary, passed=summary["passed"], num_studies=n
        )
        return row.id


@pytest.fixture
def run(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    """The CLI against the ``runtime`` fixture's database (SQLite and PostgreSQL)."""
    for key in [k for k in __import__("os").environ if k.startswith("RADSIGHT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADSIGHT_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("RADSIGHT_DATABASE_URL", runtime.settings.resolved_database_url)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args))

    assert invoke("org", "add", "City Hospital", "--region", "North").exit_code == 0
    assert invoke("org", "add", "Rural Clinic", "--region", "South").exit_code == 0
    return invoke


def _line(output: str, start: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith(start)]
    assert len(lines) == 1, output
    return lines[0]


def test_a_fresh_install_lists_what_is_installed_with_the_reasons(run, runtime):
    res = run("algorithm", "list")
    assert res.exit_code == 0, res.output
    assert _line(res.output, "radsight-bright-region ").split()[:4] == [
        "radsight-bright-region",
        "1.0.0",
        "yes",
        "approved",
    ]
    assert _line(res.output, "radsight-mmg ").split()[:4] == [
        "radsight-mmg",
        "1.1.0",
        "yes",
        "shadow",
    ]
    shipped = shipped_evaluation(runtime, MMG)
    assert f"#{shipped} fails, n=242, AUROC 0.648 (0.575-0.720)" in _line(
        res.output, "radsight-mmg "
    )
    assert (
        "radsight-bright-region@1.0.0 approved: its shipped evidence passes the acceptance rule"
        in res.output
    )
    assert (
        "radsight-mmg@1.1.0 shadow: its shipped evidence does not pass the acceptance rule: the "
        "reference set has 242 studies; the acceptance rule needs at least 400; AUROC 0.648 is "
        "below the bar 0.81" in res.output
    )
    # listing twice registers nothing twice
    assert run("algorithm", "list").output == res.output
    show = run("algorithm", "show", MMG)
    assert show.exit_code == 0, show.output
    assert "radsight-mmg 1.1.0 (installed): shadow platform-wide" in show.output
    assert f"  #{shipped}: AUROC 0.648 is below the bar 0.81" in show.output
    assert "shipped with the package" in show.output


def test_approval_needs_evidence_of_400_studies_or_an_override(run, runtime):
    res = run("algorithm", "approve", MMG)
    assert res.exit_code == 1
    assert res.output.startswith("error[admission_refused]: radsight-mmg 1.1.0 cannot be approved")
    shipped = shipped_evaluation(runtime, MMG)
    assert f"evaluation {shipped}: the reference set has 242 studies" in res.output
    assert "AUROC 0.648 is below the bar 0.81" in res.output
    # 399 studies, otherwise passing: refused under the default rule, naming 399 < 400
    small = store_evaluation(runtime, MMG, 399)
    res = run("algorithm", "approve", MMG, "--evidence", str(small))
    assert res.exit_code == 1
    assert (
        f"cannot be approved: evaluation {small}: the reference set has 399 studies; the "
        "acceptance rule needs at least 400. Run `radsight evaluate`" in res.output
    )
    # 400 studies: approved for one organisation with that evidence
    enough = store_evaluation(runtime, MMG, 400)
    res = run(
        "algorithm", "approve", MMG, "--organisation", "City Hospital", "--evidence", str(enough)
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().startswith(
        "radsight-mmg 1.1.0 is approved for organisation City Hospital (record "
    )
    assert f"evidence: evaluation {enough})" in res.output and "OVERRIDE" not in res.output
    listing = run("algorithm", "list").output
    assert "organisation City Hospital: approved" in _line(listing, "radsight-mmg ")
    assert _line(listing, "radsight-mmg ").split()[3] == "shadow"  # platform-wide unchanged
    rural = run("algorithm", "list", "--organisation", "Rural Clinic").output
    assert _line(rural, "radsight-mmg ").split()[3] == "shadow"


def test_an_override_needs_a_reason_and_the_audit_trail_keeps_it(run, runtime):
    res = run("algorithm", "approve", MMG, "--override")
    assert res.exit_code == 1
    assert "an override needs a written reason (at least 10 characters)" in res.output
    reason = "reader study at City Hospital, 2026-11, signed off by the board"
    res = run("algorithm", "approve", MMG, "--region", "North", "--override", "--reason", reason)
    assert res.exit_code == 0, res.output
    assert "is approved for region North" in res.output and "OVERRIDE" in res.output
    show = run("algorithm", "show", MMG).output
    row = [ln for ln in show.splitlines() if reason in ln and "region North" in ln]
    assert len(row) == 2 and "yes" in row[1].split()  # states in force, history (override)
    with runtime.db.session() as s:
        events = people.list_audit(s, scope=Scope.ALL, action="algorithm.approved")
        # the platform approved radsight-bright-region on its shipped evidence; the operator
        # (and the other built-ins whose evidence passes), the operator approved mmg
        actors = [e.actor.split(":")[0] for e in events]
        assert actors.count("cli") == 1 and set(actors) == {"cli", "radsight"}
        e = next(e for e in events if e.actor.startswith("cli:"))
        assert e.detail["override"] is True and e.detail["reason"] == reason
        assert e.detail["scope"].startswith("region ") and e.detail["from"] == "shadow"


def test_suspend_needs_a_reason_and_withdrawn_is_final(run):
    res = run("algorithm", "suspend", BRIGHT)
    assert res.exit_code == 1
    assert "error[admission_refused]: say why radsight-bright-region 1.0.0 is suspended" in (
        res.output
    )
    res = run("algorithm", "suspend", BRIGHT, "--organisation", "Rural Clinic", "--reason",
              "calibration drift at Rural Clinic")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = run("algorithm", "withdraw", BRIGHT, "--reason", "replaced by a better version")
    assert res.exit_code == 0 and "is withdrawn for the platform" in res.output
    res = run("algorithm", "approve", BRIGHT, "--organisation", "City Hospital", "--override",
              "--reason", "we still want it here")  # fmt: skip
    assert res.exit_code == 1
    assert "1.0.0 is withdrawn for organisation " in res.output
    assert "it cannot become approved (withdrawn is final)" in res.output
    assert _line(run("algorithm", "list").output, "radsight-bright-region ").split()[3] == (
        "withdrawn"
    )
    res = run("algorithm", "approve", "radsight-bright-region")
    assert res.exit_code == 1 and "NAME@VERSION" in res.output
    res = run("algorithm", "approve", "radsight-nothing@9.9.9")
    assert res.exit_code == 1 and "error[not_found]" in res.output


def test_switches_per_organisation(run, runtime):
    res = run("algorithm", "disable", "radsight-mmg", "--organisation", "City Hospital")
    assert res.exit_code == 2 and "--reason" in res.output  # click: a required option
    res = run("algorithm", "disable", "radsight-mmg", "--organisation", "City Hospital",
              "--reason", "no mammography here")  # fmt: skip
    assert res.exit_code == 0 and "radsight-mmg is switched off for City Hospital" in res.output
    listing = run("algorithm", "list", "--organisation", "City Hospital").output
    assert "off: no mammography here" in _line(listing, "radsight-mmg ")
    assert " on " in _line(listing, "radsight-bright-region ")
    rural = run("algorithm", "list", "--organisation", "Rural Clinic").output
    assert " on " in _line(rural, "radsight-mmg ")
    res = run("algorithm", "enable", "radsight-mmg", "--organisation", "City Hospital")
    assert res.exit_code == 0
    listing = run("algorithm", "list", "--organisation", "City Hospital").output
    assert " on " in _line(listing, "radsight-mmg ")
    res = run("algorithm", "disable", "radsight-none", "--organisation", "City Hospital",
              "--reason", "x")  # fmt: skip
    assert res.exit_code == 1 and "error[not_found]" in res.output
    with runtime.db.session() as s:
        actions = [e.action for e in people.list_audit(s, scope=Scope.ALL)]
    assert actions.count("algorithm.disable") == 1 and actions.count("algorithm.enable") == 1
