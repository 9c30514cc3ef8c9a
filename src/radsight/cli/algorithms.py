"""``radsight algorithm ...``: algorithm versions' lifecycle (docs/quality.md, "Admission").

Like the other operator commands these run on the server's machine against its database,
so the operator may change any scope; each change is recorded with the actor
``cli:<login name>``. Every command first gives each installed version that has no
recorded state its first one (:func:`radsight.monitor.admission.register_installed`), so a
fresh data directory lists what is installed. A refused change prints its reason as
``error[admission_refused]: ...`` and exits 1.
"""

from __future__ import annotations

from typing import Any

import click

from radsight.cli.errors import fail_cleanly
from radsight.cli.people import _operator
from radsight.cli.tables import table
from radsight.errors import InvalidInput


def _open(obj: Any):  # type: ignore[no-untyped-def]
    from radsight.algorithms.registry import Registry
    from radsight.monitor.admission import register_installed

    registry = Registry.from_entry_points()
    rt = obj.runtime()
    register_installed(rt, registry)
    return rt, registry


def _reference(ev: Any, width: int = 40) -> str:
    if ev is None:
        return ""
    return ev.reference if len(ev.reference) <= width else ev.reference[: width - 3] + "..."


def _evidence_text(ev: Any) -> str:
    if ev is None:
        return "none"
    return f"#{ev.evaluation_id} {ev.verdict}, n={ev.num_studies}, AUROC {ev.auroc_text}"


@click.group()
def algorithm() -> None:
    """Algorithm versions: lifecycle states, evidence, per-organisation switches."""


@algorithm.command("list")
@click.option("--organisation", help="the state in force for this organisation")
@click.pass_obj
@fail_cleanly
def algorithm_list(obj: Any, organisation: str | None) -> None:
    """Installed and recorded versions, their states and evidence."""
    from radsight.monitor.versions import list_versions
    from radsight.store import tenants
    from radsight.store.scope import Scope

    rt, registry = _open(obj)
    try:
        with rt.db.session() as s:
            scope = Scope.ALL
            if organisation:
                scope = Scope.of(tenants.get_organisation(s, organisation).id)
            versions = list_versions(s, rt.settings, registry, scope=scope)
    finally:
        rt.close()
    if organisation:
        rows = []
        for v in versions:
            o = v.organisations[0]
            rows.append(
                (
                    v.name,
                    v.version,
                    "yes" if v.installed else "no",
                    o.state,
                    f"from {o.decided_at}" if o.decided_at else "no record",
                    "off: " + o.switch_reason if o.switched_off else "on",
                    _evidence_text(v.evidence),
                    _reference(v.evidence),
                )
            )
        click.echo(f"for {o.organisation} (region {o.region}):" if versions else "")
        table(
            ["name", "version", "installed", "state", "decided", "switch", "evidence", "reference"],
            rows,
        )
        return
    table(
        ["name", "version", "installed", "platform", "differs", "evidence", "reference"],
        [
            (
                v.name,
                v.version,
                "yes" if v.installed else "no",
                v.platform_state,
                ", ".join(f"{e.scope}: {e.state}" for e in v.exceptions) or "-",
                _evidence_text(v.evidence),
                _reference(v.evidence),
            )
            for v in versions
        ],
    )
    for v in versions:
        click.echo(f"{v.ref} {v.platform_state}: {v.platform_reason}")


@algorithm.command("show")
@click.argument("ref")
@click.pass_obj
@fail_cleanly
def algorithm_show(obj: Any, ref: str) -> None:
    """One version: states in force, history, evaluations under the acceptance rule."""
    from radsight.monitor.versions import parse_ref, version_detail
    from radsight.store.scope import Scope

    name, version = parse_ref(ref)
    rt, registry = _open(obj)
    try:
        with rt.db.session() as s:
            d = version_detail(s, rt.settings, registry, name, version, scope=Scope.ALL)
    finally:
        rt.close()
    click.echo(
        f"{d.name} {d.version} ({'installed' if d.installed else 'not installed'}): "
        f"{d.platform_state} platform-wide"
    )
    click.echo("\nstates in force:")
    table(
        ["scope", "state", "since", "who", "reason"],
        [
            (r.scope, r.state, f"{r.created_at:%Y-%m-%d %H:%M}", r.actor, r.reason)
            for r in d.in_force
        ],
    )
    click.echo("\nhistory:")
    table(
        ["when", "who", "state", "scope", "evidence", "override", "reason"],
        [
            (
                f"{r.created_at:%Y-%m-%d %H:%M}",
                r.actor,
                r.state,
                r.scope,
                r.evidence_id or "",
                "yes" if r.override else "",
                r.reason,
            )
            for r in d.history
        ],
    )
    rule = d.rule
    click.echo(
        f"\nevaluations (acceptance rule: AUROC >= {rule['min_auroc']}, "
        f">= {rule['min_studies']} studies, >= {rule['min_class_fraction']:.0%} per class"
        + (
            f", pointing game >= {rule['min_pointing_game']}"
            if rule.get("min_pointing_game") is not None
            else ""
        )
        + "):"
    )
    table(
        ["id", "reference", "n", "AUROC", "rule", "by", "report"],
        [
            (
                e.evaluation_id,
                e.reference,
                e.num_studies,
                e.auroc_text,
                e.verdict,
                e.created_by,
                e.report_url or "-",
            )
            for e in d.evaluations
        ],
    )
    for e in d.evaluations:
        for p in e.problems:
            click.echo(f"  #{e.evaluation_id}: {p}")


SCOPE_OPTIONS = [
    click.option("--organisation", help="only for this organisation"),
    click.option("--region", help="for every organisation of this region"),
]


def _scoped(fn: Any) -> Any:
    for option in reversed(SCOPE_OPTIONS):
        fn = option(fn)
    return fn


def _change(
    obj: Any,
    ref: str,
    state: str,
    organisation: str | None,
    region: str | None,
    reason: str,
    evidence_id: int | None = None,
    override: bool = False,
) -> None:
    from radsight.monitor.admission import change_state
    from radsight.monitor.versions import parse_ref

    if organisation and region:
        raise InvalidInput("give --organisation or --region, not both")
    name, version = parse_ref(ref)
    rt, registry = _open(obj)
    try:
        row = change_state(
            rt,
            _operator(),
            name,
            version,
            state,
            organisation=organisation,
            region=region,
            reason=reason,
            evidence_id=evidence_id,
            override=override,
            registry=registry,
        )
    finally:
        rt.close()
    where = (
        f"organisation {organisation}"
        if organisation
        else f"region {region}"
        if region
        else ("the platform")
    )
    click.echo(
        f"{name} {version} is {row.state} for {where} (record {row.id}"
        + (f", evidence: evaluation {row.evidence_id}" if row.evidence_id else "")
        + (", OVERRIDE" if row.override else "")
        + ")"
    )


@algorithm.command("approve")
@click.argument("ref")
@_scoped
@click.option("--evidence", "evidence_id", type=int, help="the evaluation that is the evidence")
@click.option("--override", is_flag=True, help="approve without passing evidence (needs --reason)")
@click.option("--reason", default="", help="why (kept in the history and the audit trail)")
@click.pass_obj
@fail_cleanly
def algorithm_approve(
    obj: Any,
    ref: str,
    organisation: str | None,
    region: str | None,
    evidence_id: int | None,
    override: bool,
    reason: str,
) -> None:
    """Approve NAME@VERSION: its results are delivered (needs passing evidence)."""
    _change(obj, ref, "approved", organisation, region, reason, evidence_id, override)


@algorithm.command("shadow")
@click.argument("ref")
@_scoped
@click.option("--reason", default="", help="why")
@click.pass_obj
@fail_cleanly
def algorithm_shadow(
    obj: Any, ref: str, organisation: str | None, region: str | None, reason: str
) -> None:
    """Put NAME@VERSION in shadow: it runs, its results are stored only."""
    _change(obj, ref, "shadow", organisation, region, reason)


@algorithm.command("suspend")
@click.argument("ref")
@_scoped
@click.option("--reason", default="", help="why (required)")
@click.pass_obj
@fail_cleanly
def algorithm_suspend(
    obj: Any, ref: str, organisation: str | None, region: str | None, reason: str
) -> None:
    """Suspend NAME@VERSION: it runs in shadow until approved again."""
    _change(obj, ref, "suspended", organisation, region, reason)


@algorithm.command("withdraw")
@click.argument("ref")
@_scoped
@click.option("--reason", default="", help="why (required)")
@click.pass_obj
@fail_cleanly
def algorithm_withdraw(
    obj: Any, ref: str, organisation: str | None, region: str | None, reason: str
) -> None:
    """Withdraw NAME@VERSION: it never runs again there (final)."""
    _change(obj, ref, "withdrawn", organisation, region, reason)


def _switch(obj: Any, name: str, organisation: str, enabled: bool, reason: str) -> None:
    from radsight.monitor.admission import set_enabled

    if not enabled and not reason.strip():
        raise InvalidInput("say why it is switched off (--reason)")
    rt, registry = _open(obj)
    try:
        set_enabled(rt, _operator(), organisation, name, enabled, reason=reason, registry=registry)
    finally:
        rt.close()
    click.echo(f"{name} is switched {'on' if enabled else 'off'} for {organisation}")


@algorithm.command("enable")
@click.argument("name")
@click.option("--organisation", required=True)
@click.option("--reason", default="")
@click.pass_obj
@fail_cleanly
def algorithm_enable(obj: Any, name: str, organisation: str, reason: str) -> None:
    """Switch algorithm NAME (every version) on for an organisation."""
    _switch(obj, name, organisation, True, reason)


@algorithm.command("disable")
@click.argument("name")
@click.option("--organisation", required=True)
@click.option("--reason", required=True, help="why (kept in the audit trail)")
@click.pass_obj
@fail_cleanly
def algorithm_disable(obj: Any, name: str, organisation: str, reason: str) -> None:
    """Switch algorithm NAME (every version) off for an organisation: it does not run."""
    _switch(obj, name, organisation, False, reason)
