"""Clinical monitoring (pure): the AI's verdicts against the radiologists'.

A radiologist's ``study`` verdict (normal / abnormal) is the reference for every result of
the study: sensitivity, specificity, PPV, NPV and agreement (share of studies where the
AI's verdict equals the radiologist's), with Wilson 95 % intervals. ``finding`` verdicts
(agree / disagree; unsure is left out) give the finding agreement rate. Only the newest
verdict per (study, algorithm version) counts.

A figure alerts only when the evidence is conclusive: its whole interval lies below its
bar (the upper bound is under the bar), so a handful of cases never raises an alert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from radsight.errors import InvalidInput
from radsight.monitor.metrics import Confusion, Estimate, wilson

GROUP_KEYS = ("algorithm_name", "algorithm_version", "organisation_id", "study_type")


def period_of(when: datetime, period: str) -> str:
    if period == "day":
        return when.strftime("%Y-%m-%d")
    if period == "week":
        return (when - timedelta(days=when.weekday())).strftime("%Y-%m-%d")
    if period == "month":
        return when.strftime("%Y-%m")
    if period == "all":
        return "all"
    raise InvalidInput(f"period must be day, week, month or all, not {period!r}")


def figures(
    verdicts: list[dict[str, Any]],
    group_by: Sequence[str] = ("algorithm_name", "algorithm_version", "organisation_id"),
    period: str = "all",
) -> list[dict[str, Any]]:
    """One row per group (and period) with the confusion table and its figures."""
    for key in group_by:
        if key not in GROUP_KEYS:
            raise InvalidInput(f"cannot group by {key!r}; use {', '.join(GROUP_KEYS)}")
    study: dict[tuple, dict[str, Any]] = {}
    finding: dict[tuple, list[str]] = defaultdict(list)
    for v in sorted(verdicts, key=lambda v: (v["created_at"], v["verdict_id"])):
        group = tuple(v[k] for k in group_by) + (period_of(v["created_at"], period),)
        if v["kind"] == "study" and v["value"] in ("normal", "abnormal"):
            # newest verdict per (study, algorithm version) wins
            study[(group, v["study_id"], v["algorithm_name"], v["algorithm_version"])] = v
        elif v["kind"] == "finding" and v["value"] in ("agree", "disagree"):
            finding[group].append(v["value"])
    truth: dict[tuple, list[tuple[bool, bool]]] = defaultdict(list)
    for (group, *_), v in study.items():
        truth[group].append((v["value"] == "abnormal", v["ai_verdict"] == "abnormal"))
    rows = []
    for group in sorted(set(truth) | set(finding), key=lambda g: tuple(str(x) for x in g)):
        pairs = truth.get(group, [])
        conf = Confusion.of([t for t, _ in pairs], [c for _, c in pairs])
        agree = finding.get(group, [])
        rows.append(
            {
                **dict(zip(group_by, group[:-1], strict=True)),
                "period": group[-1],
                "studies": len(pairs),
                **conf.to_json(),
                "finding_agreement": wilson(agree.count("agree"), len(agree)).to_json(),
            }
        )
    return rows


def below_bar(row: dict[str, Any], bars: dict[str, float]) -> list[tuple[str, float, dict]]:
    """(figure, bar, estimate) for each figure whose 95 % interval lies wholly below its bar."""
    out = []
    for name, bar in bars.items():
        est = row.get(name)
        if isinstance(est, dict) and est.get("upper") is not None and est["upper"] < bar:
            out.append((name, bar, est))
    return out


def estimate(row: dict[str, Any], name: str) -> Estimate:
    e = row[name]
    return Estimate(e["value"], e["lower"], e["upper"], e["n"])
