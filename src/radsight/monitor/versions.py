"""Algorithm versions as ``radsight algorithm``, ``/api/algorithms`` and the supervisors'
``/algorithms`` page show them: installed or known, the states in force at each scope and
for each organisation in view, the switches, and the evidence judged under the acceptance
rule in force (:func:`radsight.admission.evidence_problems`).

One read model for the three surfaces, so that they cannot disagree; the changes
themselves are :mod:`radsight.monitor.admission`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from radsight.admission import (
    AcceptanceRule,
    evidence_problems,
    in_force,
    mode_of,
    state_in_force,
)
from radsight.algorithms.registry import Registry, version_key
from radsight.config import Settings
from radsight.errors import InvalidInput, NotFound
from radsight.monitor.admission import acceptance_rule
from radsight.store import Session, quality, tenants
from radsight.store import admission as admissionstore
from radsight.store import monitoring as monitoringstore
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import AlgorithmStateRow, EvaluationRow

#: recent shadow results are counted over this many days
RECENT_DAYS = 30


def report_url(evaluation_id: int) -> str:
    """Where a calibration test's HTML report is served (``GET``, any signed-in caller)."""
    return f"/api/evaluations/{evaluation_id}/report.html"


@dataclass(frozen=True)
class Evidence:
    """An evaluation of a version, judged under the acceptance rule in force."""

    evaluation_id: int
    reference: str
    state: str
    num_studies: int
    positives: int
    negatives: int
    auroc: dict[str, Any] | None
    passes: bool
    problems: list[str]
    shipped: bool
    created_by: str
    created_at: datetime
    report_url: str | None

    @property
    def auroc_text(self) -> str:
        a = self.auroc or {}
        if a.get("value") is None:
            return "-"
        if a.get("lower") is None or a.get("upper") is None:
            return f"{a['value']:.3f}"
        return f"{a['value']:.3f} ({a['lower']:.3f}-{a['upper']:.3f})"

    @property
    def verdict(self) -> str:
        return "passes" if self.passes else "fails"


def judge(ev: EvaluationRow, rule: AcceptanceRule) -> Evidence:
    summary = ev.summary or {}
    if ev.state != "done":
        problems = [f"evaluation {ev.id} is {ev.state}"]
    else:
        problems = evidence_problems(summary, rule)
    auroc = summary.get("auroc")
    return Evidence(
        evaluation_id=ev.id,
        reference=ev.reference_name,
        state=ev.state,
        num_studies=int(summary.get("num_studies") or ev.num_studies or 0),
        positives=int(summary.get("positives") or 0),
        negatives=int(summary.get("negatives") or 0),
        auroc=auroc if isinstance(auroc, dict) else None,
        passes=not problems,
        problems=problems,
        shipped=bool(summary.get("shipped")),
        created_by=ev.created_by,
        created_at=ev.created_at,
        report_url=report_url(ev.id) if ev.report_key else None,
    )


@dataclass(frozen=True)
class Record:
    """One row of a version's history, with its scope in words."""

    id: int
    created_at: datetime
    actor: str
    state: str
    scope: str
    scope_kind: str
    organisation_id: int | None
    region_id: int | None
    reason: str
    evidence_id: int | None
    override: bool


@dataclass(frozen=True)
class OrganisationState:
    """What a version is for one organisation in view."""

    organisation_id: int
    organisation: str
    region: str
    state: str
    #: clinical | shadow | None (does not run)
    mode: str | None
    #: where the state comes from: "organisation", "region", "platform" or "" (no record)
    decided_at: str
    switched_off: bool
    switch_reason: str


@dataclass
class Version:
    name: str
    version: str
    installed: bool
    platform_state: str
    #: why the platform-wide state is what it is (the record's reason)
    platform_reason: str
    #: states in force at a region or an organisation in view, differing from the platform's
    exceptions: list[Record]
    organisations: list[OrganisationState]
    #: the approval's evidence, else the newest passing evaluation, else the newest one
    evidence: Evidence | None
    shadow_results: int = 0
    clinical_results: int = 0

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class VersionDetail(Version):
    history: list[Record] = field(default_factory=list)
    in_force: list[Record] = field(default_factory=list)
    evaluations: list[Evidence] = field(default_factory=list)
    rule: dict[str, Any] = field(default_factory=dict)


class _Names:
    """Organisation and region names, read once."""

    def __init__(self, s: Session) -> None:
        rows = tenants.list_organisations(s, scope=Scope.ALL)
        self.orgs = {o.id: o.name for o, _ in rows}
        self.org_region = {o.id: o.region_id for o, _ in rows}
        self.regions = {r.id: r.name for _, r in rows}

    def scope(self, organisation_id: int | None, region_id: int | None) -> str:
        if organisation_id is not None:
            return f"organisation {self.orgs.get(organisation_id, organisation_id)}"
        if region_id is not None:
            return f"region {self.regions.get(region_id, region_id)}"
        return "platform"


def _record(r: AlgorithmStateRow, names: _Names) -> Record:
    kind = "organisation" if r.organisation_id else "region" if r.region_id else "platform"
    return Record(
        id=r.id,
        created_at=r.created_at,
        actor=r.actor,
        state=r.state,
        scope=names.scope(r.organisation_id, r.region_id),
        scope_kind=kind,
        organisation_id=r.organisation_id,
        region_id=r.region_id,
        reason=r.reason,
        evidence_id=r.evidence_id,
        override=r.override,
    )


def _versions(s: Session, registry: Registry) -> list[tuple[str, str, bool]]:
    installed = {(a.name, a.version) for a in registry.all()}
    keys = installed | admissionstore.known_versions(s)
    return [
        (n, v, (n, v) in installed)
        for n, v in sorted(keys, key=lambda k: (k[0], version_key(k[1])))
    ]


def _build(
    s: Session,
    name: str,
    version: str,
    installed: bool,
    *,
    scope: Scope,
    rule: AcceptanceRule,
    names: _Names,
    orgs: list[tuple[int, str, str, int]],
    switches: dict[int, dict[str, Any]],
    counts: dict[tuple[str, str, str], int],
    detail: bool,
) -> Version | VersionDetail:
    all_rows = admissionstore.state_history(s, name, version, scope=Scope.ALL)
    visible = [
        r for r in all_rows if r.organisation_id is None or scope.includes(r.organisation_id)
    ]
    by_id = {r.id: r for r in all_rows}
    recs = admissionstore.records(all_rows)
    current = in_force(recs)
    platform = [r for r in current if r.organisation_id is None and r.region_id is None]
    platform_state = platform[0].state if platform else "registered"

    def shown(r: Any) -> bool:
        """A region's record, or the record of an organisation in scope."""
        if r.organisation_id is not None:
            return scope.includes(r.organisation_id)
        return r.region_id is not None

    exceptions = [
        _record(by_id[r.id], names) for r in current if shown(r) and r.state != platform_state
    ]
    org_states = []
    for org_id, org_name, region_name, region_id in orgs:
        state, rec = state_in_force(recs, org_id, region_id)
        off = switches.get(org_id, {}).get(name)
        org_states.append(
            OrganisationState(
                organisation_id=org_id,
                organisation=org_name,
                region=region_name,
                state=state,
                mode=None if off is not None else mode_of(state),
                decided_at=rec.scope_kind if rec is not None else "",
                switched_off=off is not None,
                switch_reason=off.reason if off is not None else "",
            )
        )
    evaluations = [judge(e, rule) for e in quality.list_evaluations(s, name, version, scope=scope)]
    by_eval = {e.evaluation_id: e for e in evaluations}
    evidence = None
    approving = [by_id[r.id] for r in current if r.state == "approved" and shown(r)]
    used = [r.evidence_id for r in approving if r.evidence_id in by_eval]
    if platform and by_id[platform[0].id].evidence_id in by_eval:
        evidence = by_eval[by_id[platform[0].id].evidence_id]  # type: ignore[index]
    elif used:
        evidence = by_eval[used[-1]]  # type: ignore[index]
    else:
        passing = [e for e in evaluations if e.passes]
        done = [e for e in evaluations if e.state == "done"]
        evidence = passing[0] if passing else done[0] if done else None
    common: dict[str, Any] = {
        "name": name,
        "version": version,
        "installed": installed,
        "platform_state": platform_state,
        "platform_reason": by_id[platform[0].id].reason if platform else "no state recorded",
        "exceptions": exceptions,
        "organisations": org_states,
        "evidence": evidence,
        "shadow_results": counts.get((name, version, "shadow"), 0),
        "clinical_results": counts.get((name, version, "clinical"), 0),
    }
    if not detail:
        return Version(**common)
    return VersionDetail(
        **common,
        history=[_record(r, names) for r in visible],
        in_force=[
            _record(by_id[r.id], names)
            for r in current
            if r.organisation_id is None or scope.includes(r.organisation_id)
        ],
        evaluations=evaluations,
        rule=asdict(rule),
    )


def _context(
    s: Session, scope: Scope
) -> tuple[_Names, list[tuple[int, str, str, int]], dict[int, dict[str, Any]], dict]:
    names = _Names(s)
    orgs = [(o.id, o.name, r.name, r.id) for o, r in tenants.list_organisations(s, scope=scope)]
    switches = {org_id: admissionstore.switched_off(s, org_id) for org_id, *_ in orgs}
    since = utcnow() - timedelta(days=RECENT_DAYS)
    counts = monitoringstore.result_counts_by_mode(s, scope=scope, since=since)
    return names, orgs, switches, counts


def list_versions(
    s: Session, settings: Settings, registry: Registry, *, scope: Scope
) -> list[Version]:
    """Every installed or recorded version, with its states for the organisations in
    ``scope`` (the regions' and platform's records are everyone's to see)."""
    names, orgs, switches, counts = _context(s, scope)
    rule = acceptance_rule(settings)
    return [
        _build(
            s,
            n,
            v,
            inst,
            scope=scope,
            rule=rule,
            names=names,
            orgs=orgs,
            switches=switches,
            counts=counts,
            detail=False,
        )  # fmt: skip
        for n, v, inst in _versions(s, registry)
    ]


def version_detail(
    s: Session, settings: Settings, registry: Registry, name: str, version: str, *, scope: Scope
) -> VersionDetail:
    """One version: its history, states in force, evaluations judged under the rule."""
    found = [(n, v, i) for n, v, i in _versions(s, registry) if (n, v) == (name, version)]
    if not found:
        raise NotFound(f"algorithm {name} version {version} is neither installed nor recorded")
    names, orgs, switches, counts = _context(s, scope)
    out = _build(
        s, name, version, found[0][2], scope=scope, rule=acceptance_rule(settings),
        names=names, orgs=orgs, switches=switches, counts=counts, detail=True,
    )  # fmt: skip
    assert isinstance(out, VersionDetail)
    return out


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME@VERSION`` -> (name, version); a lifecycle change names an exact version."""
    name, _, version = ref.partition("@")
    if not name or not version:
        raise InvalidInput(f"name an exact version as NAME@VERSION, not {ref!r}")
    return name, version
