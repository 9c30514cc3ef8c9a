"""Algorithm admission (pure): which state an algorithm version is in for an organisation,
what that state lets it do, which moves between states are allowed, and whether an
evaluation is evidence enough to approve it.

A version's lifecycle (docs/quality.md, "Admission")::

    registered --> shadow --> approved --> suspended --> withdrawn
         |            ^  \\______^  |  ^________/ |
         '------------+------------'--------------'---> withdrawn (from any state)

- ``registered``: installed, nobody has decided on it yet. Like ``shadow``, it runs on the
  studies a rule routes to it with its results stored only: no version reaches a
  radiologist before it is approved.
- ``shadow``: put there on purpose (or by shipped evidence that does not pass); runs on
  the studies a rule routes to it; its results are stored only (no C-STORE, not on
  radiologists' worklists or viewer); supervisors and monitoring see them.
- ``approved``: runs and delivers (the clinical mode).
- ``suspended``: was approved, is not trusted now (a supervisor's decision or an automatic
  suspension on a conclusive calibration failure); runs in shadow until reinstated.
- ``withdrawn``: never runs again (final).

A state is recorded at a scope: platform-wide, a region, or one organisation; for an
organisation the most specific record in force wins (organisation over region over
platform), and a version with no record at all is ``registered``. The store keeps every
record (append-only); :func:`state_in_force` reads the newest per scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

STATES = ("registered", "shadow", "approved", "suspended", "withdrawn")
State = Literal["registered", "shadow", "approved", "suspended", "withdrawn"]
Mode = Literal["clinical", "shadow"]

#: the moves a supervisor may make (an automatic suspension is approved -> suspended)
TRANSITIONS: dict[str, frozenset[str]] = {
    "registered": frozenset({"shadow", "approved", "withdrawn"}),
    "shadow": frozenset({"approved", "registered", "withdrawn"}),
    "approved": frozenset({"suspended", "shadow", "withdrawn"}),
    "suspended": frozenset({"approved", "shadow", "withdrawn"}),
    "withdrawn": frozenset(),
}

#: a state -> how a version in it runs on a routed study (None: it does not run)
MODES: dict[str, Mode | None] = {
    "registered": "shadow",
    "shadow": "shadow",
    "approved": "clinical",
    "suspended": "shadow",
    "withdrawn": None,
}


def mode_of(state: str) -> Mode | None:
    """``clinical`` (results delivered and shown), ``shadow`` (stored only) or None."""
    return MODES[state]


def can_move(current: str, new: str) -> bool:
    return new in TRANSITIONS[current]


@dataclass(frozen=True)
class AcceptanceRule:
    """What an evaluation must show before a version may be approved.

    The defaults are the Moscow methodology's: at least 400 studies, at least 10 % of them
    in each class, AUROC at least 0.81. ``min_pointing_game``, when set, also requires the
    share of positives whose top mark falls inside a reference region (the evaluation's
    localisation figures) to reach it.
    """

    min_auroc: float = 0.81
    min_studies: int = 400
    min_class_fraction: float = 0.10
    min_pointing_game: float | None = None


def evidence_problems(summary: Mapping[str, Any], rule: AcceptanceRule) -> list[str]:
    """Why an evaluation's summary is not evidence enough under ``rule`` ([] when it is).

    ``summary`` is what :func:`radsight.monitor.calibration.summarise` stores (or what a
    package ships as its evidence, in the same shape).
    """
    problems: list[str] = []
    n = int(summary.get("num_studies") or 0)
    analysed = int(summary.get("num_analysed", n) or 0)  # refused cases are no evidence
    if n < rule.min_studies:
        problems.append(
            f"the reference set has {n} studies; the acceptance rule needs at least "
            f"{rule.min_studies}"
        )
    elif analysed < rule.min_studies:
        problems.append(
            f"{analysed} of the {n} studies were analysed; the acceptance rule needs at "
            f"least {rule.min_studies}"
        )
    positives = int(summary.get("positives") or 0)
    negatives = int(summary.get("negatives") or 0)
    classified = positives + negatives
    for name, count in (("positive", positives), ("negative", negatives)):
        share = count / classified if classified else 0.0
        if share < rule.min_class_fraction:
            problems.append(
                f"{share:.1%} of the studies are {name}; the acceptance rule needs at least "
                f"{rule.min_class_fraction:.0%} in each class"
            )
    auroc = summary.get("auroc") or {}
    value = auroc.get("value") if isinstance(auroc, Mapping) else None
    if value is None:
        problems.append("the evaluation has no AUROC")
    elif float(value) < rule.min_auroc:
        problems.append(f"AUROC {float(value):.3f} is below the bar {rule.min_auroc:.2f}")
    if rule.min_pointing_game is not None:
        pg = (summary.get("localisation") or {}).get("pointing_game") or {}
        hit = pg.get("value") if isinstance(pg, Mapping) else None
        if hit is None:
            problems.append("the evaluation has no localisation figures (pointing game)")
        elif float(hit) < rule.min_pointing_game:
            problems.append(
                f"pointing game {float(hit):.3f} is below the bar {rule.min_pointing_game:.2f}"
            )
    return problems


def conclusively_below(summary: Mapping[str, Any], rule: AcceptanceRule) -> bool:
    """The whole 95 % CI of the AUROC lies below the bar: a failure no more data would fix.

    What an automatic suspension needs; a small or unbalanced set that merely misses the
    rule is inconclusive and suspends nothing.
    """
    auroc = summary.get("auroc") or {}
    upper = auroc.get("upper") if isinstance(auroc, Mapping) else None
    return upper is not None and float(upper) < rule.min_auroc


@dataclass(frozen=True)
class StateRecord:
    """One recorded state of a version at a scope (a row of the store's history)."""

    id: int
    state: str
    organisation_id: int | None
    region_id: int | None
    created_at: datetime

    @property
    def scope_kind(self) -> str:
        if self.organisation_id is not None:
            return "organisation"
        if self.region_id is not None:
            return "region"
        return "platform"


def in_force(records: Iterable[StateRecord]) -> list[StateRecord]:
    """The newest record per scope (platform, each region, each organisation)."""
    newest: dict[tuple[int | None, int | None], StateRecord] = {}
    for r in records:
        key = (r.organisation_id, r.region_id if r.organisation_id is None else None)
        old = newest.get(key)
        if old is None or (r.created_at, r.id) > (old.created_at, old.id):
            newest[key] = r
    return sorted(newest.values(), key=lambda r: (r.scope_kind, r.id))


def state_in_force(
    records: Iterable[StateRecord], organisation_id: int | None, region_id: int | None
) -> tuple[str, StateRecord | None]:
    """The state of a version for one organisation, and the record that decided it.

    Organisation over region over platform; ``registered`` (no record) when none applies.
    ``withdrawn`` at any scope that applies is final everywhere below it too: a version
    withdrawn platform-wide cannot be approved back for one organisation.
    """
    current = in_force(records)
    applicable = [
        r
        for r in current
        if (r.organisation_id is not None and r.organisation_id == organisation_id)
        or (r.organisation_id is None and r.region_id is not None and r.region_id == region_id)
        or (r.organisation_id is None and r.region_id is None)
    ]
    withdrawn = [r for r in applicable if r.state == "withdrawn"]
    if withdrawn:
        return "withdrawn", withdrawn[0]
    for kind in ("organisation", "region", "platform"):
        for r in applicable:
            if r.scope_kind == kind:
                return r.state, r
    return "registered", None


@dataclass(frozen=True)
class Planned:
    """One version a routed algorithm reference runs as, and how."""

    version: str
    mode: Mode


def plan_versions(
    ref_version: str, states: Mapping[str, str], version_key: Any = None
) -> tuple[list[Planned], str]:
    """The versions a rule's algorithm reference runs for one organisation.

    ``states``: every installed version -> its state for the organisation. A reference
    with a version (``name@1.2.0``) runs that version in its mode. A bare name runs the
    newest approved version in clinical mode and every newer registered, shadow or
    suspended version in shadow mode beside it, so that a new version earns its evidence
    on live studies while the approved one serves. Returns the plan and, when it is
    empty, why.
    """
    key = version_key or (lambda v: v)
    if ref_version:
        state = states.get(ref_version)
        if state is None:
            return [], f"version {ref_version} is not installed"
        mode = mode_of(state)
        if mode is None:
            return [], f"version {ref_version} is {state}"
        return [Planned(ref_version, mode)], ""
    approved = sorted((v for v, st in states.items() if st == "approved"), key=key)
    plan = [Planned(approved[-1], "clinical")] if approved else []
    newer = (lambda v: key(v) > key(approved[-1])) if approved else (lambda v: True)
    plan += [
        Planned(v, "shadow")
        for v in sorted(states, key=key)
        if mode_of(states[v]) == "shadow" and newer(v)
    ]
    if plan:
        return plan, ""
    listed = ", ".join(f"{v} {st}" for v, st in sorted(states.items(), key=lambda x: key(x[0])))
    return [], f"no version may run ({listed or 'none installed'})"
