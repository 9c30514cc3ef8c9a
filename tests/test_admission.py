"""The admission policy (pure): states in force by scope, plans, the evidence bar."""

from __future__ import annotations

from datetime import datetime, timedelta

from radsight.admission import (
    AcceptanceRule,
    StateRecord,
    conclusively_below,
    evidence_problems,
    plan_versions,
    state_in_force,
)

T0 = datetime(2026, 12, 1)


def rec(i, state, org=None, region=None):  # type: ignore[no-untyped-def]
    return StateRecord(i, state, org, region, T0 + timedelta(minutes=i))


def test_the_most_specific_scope_wins_and_no_record_is_registered():
    rows = [rec(1, "shadow"), rec(2, "approved", region=7), rec(3, "suspended", org=5)]
    assert state_in_force(rows, 5, 7)[0] == "suspended"
    assert state_in_force(rows, 6, 7)[0] == "approved"
    assert state_in_force(rows, 9, 8)[0] == "shadow"
    assert state_in_force([], 1, 1) == ("registered", None)


def test_the_newest_record_per_scope_is_in_force_and_withdrawn_is_final_below():
    rows = [rec(1, "approved"), rec(2, "suspended", org=5), rec(3, "approved", org=5)]
    assert state_in_force(rows, 5, 1)[0] == "approved"
    rows.append(rec(4, "withdrawn"))
    assert state_in_force(rows, 5, 1)[0] == "withdrawn"


def test_a_bare_name_runs_the_newest_approved_version_and_every_shadow_beside_it():
    states = {
        "0.8": "shadow",
        "0.9": "withdrawn",
        "1.0.0": "approved",
        "1.1.0": "approved",
        "1.2.0": "shadow",
    }
    plan, why = plan_versions("", states)
    assert [(p.version, p.mode) for p in plan] == [("1.1.0", "clinical"), ("1.2.0", "shadow")]
    assert why == ""
    plan, _ = plan_versions("", {"1.0.0": "registered"})
    assert [(p.version, p.mode) for p in plan] == [("1.0.0", "shadow")]
    plan, why = plan_versions("", {"1.0.0": "withdrawn"})
    assert plan == [] and "1.0.0 withdrawn" in why
    plan, why = plan_versions("0.9", states)
    assert plan == [] and "withdrawn" in why


def summary(n=400, pos=200, auroc=0.9, lower=0.85, upper=0.95):  # type: ignore[no-untyped-def]
    return {
        "num_studies": n,
        "positives": pos,
        "negatives": n - pos,
        "auroc": {"value": auroc, "lower": lower, "upper": upper},
    }


def test_the_default_rule_needs_400_studies_ten_percent_per_class_and_the_auroc_bar():
    rule = AcceptanceRule()
    assert evidence_problems(summary(), rule) == []
    assert "399 studies" in evidence_problems(summary(n=399, pos=199), rule)[0]
    assert "5.0% of the studies are positive" in evidence_problems(summary(pos=20), rule)[0]
    assert "AUROC 0.800" in evidence_problems(summary(auroc=0.8), rule)[0]
    assert evidence_problems({}, rule)[-1] == "the evaluation has no AUROC"
    refused = {**summary(), "num_studies": 500, "num_analysed": 380}
    assert "380 of the 500 studies were analysed" in evidence_problems(refused, rule)[0]
    pg_rule = AcceptanceRule(min_pointing_game=0.6)
    assert "no localisation" in evidence_problems(summary(), pg_rule)[0]
    located = {**summary(), "localisation": {"pointing_game": {"value": 0.55}}}
    assert "pointing game 0.550" in evidence_problems(located, pg_rule)[0]


def test_only_a_whole_ci_below_the_bar_is_conclusive():
    rule = AcceptanceRule()
    assert conclusively_below(summary(auroc=0.6, upper=0.7), rule)
    assert not conclusively_below(summary(auroc=0.75, upper=0.85), rule)
    assert not conclusively_below({}, rule)
