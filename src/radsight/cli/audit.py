"""``radsight audit ...``: read the audit trail and check its hash chain.

``verify`` exits 0 with ``N events, chain intact from #A to #B`` and 1 naming the first
event that does not verify (edited, deleted, inserted or moved). ``head`` prints the
newest event's hash, to be copied out to write-once storage (see docs/security.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from radsight.cli.errors import fail_cleanly
from radsight.cli.tables import table
from radsight.errors import AuditChainBroken, InvalidInput
from radsight.store.scope import Scope


@click.group()
def audit() -> None:
    """The audit trail: who read or changed what, chained so that an edit shows."""


@audit.command("verify")
@click.option("--anchor", help="a head hash copied out earlier: it must still be in the trail")
@click.pass_obj
@fail_cleanly
def audit_verify(c: Any, anchor: str | None) -> None:
    """Recompute the hash chain; exit 1 naming the first event that does not match."""
    from radsight.store.audit import verify_chain

    rt = c.runtime()
    with rt.db.session() as s:
        report = verify_chain(s, anchor=anchor)
    if not report.ok:
        raise AuditChainBroken(report.describe_problems())
    click.echo(report.summary())


@audit.command("head")
@click.pass_obj
@fail_cleanly
def audit_head(c: Any) -> None:
    """Print ``<id> <hash> <time>`` of the newest event (copy it to a log collector)."""
    from radsight.store.audit import chain_head
    from radsight.store.clock import utcnow

    rt = c.runtime()
    with rt.db.session() as s:
        head = chain_head(s)
    if head is None:
        raise InvalidInput("the audit trail is empty")
    click.echo(f"{head[0]} {head[1]} {utcnow().strftime('%Y-%m-%dT%H:%M:%SZ')}")


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        message = f"--since takes a date or time (2026-12-07T09:00), not {value!r}"
        raise InvalidInput(message) from None


@audit.command("list")
@click.option("--since", help="events at or after this time (UTC, ISO 8601)")
@click.option("--actor", help="a user name, token name or cli:<login>")
@click.option("--study", type=int, help="a study id")
@click.option("--action", help="an action, or a prefix such as study.*")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@fail_cleanly
def audit_list(
    c: Any,
    since: str | None,
    actor: str | None,
    study: int | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Events, newest first."""
    from radsight.store.audit import list_audit

    rt = c.runtime()
    with rt.db.session() as s:
        rows = list_audit(
            s,
            scope=Scope.ALL,
            study_id=study,
            action=action,
            actor=actor,
            since=_since(since),
            limit=limit,
        )
    if as_json:
        keys = ("id", "created_at", "actor", "action", "organisation_id", "study_id")
        data = [
            {**{k: getattr(r, k) for k in keys}, "detail": r.detail, "remote_addr": r.remote_addr}
            for r in rows
        ]
        click.echo(json.dumps(data, indent=2, default=str))
        return
    table(
        ["id", "time", "actor", "action", "org", "study", "address", "detail"],
        [
            (
                r.id,
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.actor,
                r.action,
                r.organisation_id,
                r.study_id,
                r.remote_addr,
                json.dumps(r.detail, sort_keys=True)[:100],
            )
            for r in rows
        ],
        none="",
    )
