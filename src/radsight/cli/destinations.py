"""``radsight destination ...``: where an organisation's results are C-STOREd, over
plain DICOM or DICOM TLS (``--tls``; see docs/security.md, "DICOM TLS")."""

from __future__ import annotations

from typing import Any

import click

from radsight.cli.errors import fail_cleanly
from radsight.cli.tables import table
from radsight.store.scope import Scope


def _audit(s: Any, action: str, organisation_id: int, detail: dict[str, Any]) -> None:
    """A change made from the command line, in the audit trail as ``cli:<login>``."""
    from radsight.cli.people import _operator
    from radsight.store.audit import record_audit

    record_audit(s, _operator(), action, organisation_id=organisation_id, detail=detail)


@click.group()
def destination() -> None:
    """Where an organisation's results are sent (C-STORE)."""


_TLS = click.option(
    "--tls/--no-tls",
    "tls",
    default=None,
    help="deliver over DICOM TLS, verifying the PACS's certificate (never plain TCP)",
)
_TLS_SERVER_NAME = click.option(
    "--tls-server-name",
    default=None,
    help="the name the PACS's certificate must carry (default: --host)",
)


@destination.command("add")
@click.argument("organisation")
@click.argument("name")
@click.option("--ae-title", required=True)
@click.option("--host", required=True)
@click.option("--port", required=True, type=int)
@_TLS
@_TLS_SERVER_NAME
@click.pass_obj
@fail_cleanly
def destination_add(
    c: Any,
    organisation: str,
    name: str,
    ae_title: str,
    host: str,
    port: int,
    tls: bool | None,
    tls_server_name: str | None,
) -> None:
    from radsight.store import tenants

    rt = c.runtime()
    with rt.db.session() as s:
        o = tenants.get_organisation(s, organisation)
        row = tenants.create_destination(
            s,
            o.id,
            name,
            ae_title,
            host,
            port,
            tls=bool(tls),
            tls_server_name=tls_server_name or "",
        )
        detail = {
            "name": name,
            "ae_title": ae_title,
            "host": host,
            "port": port,
            "tls": row.tls,
            "tls_server_name": row.tls_server_name,
        }
        _audit(s, "destination.create", o.id, detail)
    click.echo(f"results of {o.name!r} go to {ae_title}@{host}:{port} ({name}){_tls_note(row)}")


def _tls_note(row: Any) -> str:
    if not row.tls:
        return ""
    return f" over TLS, certificate checked for {row.tls_server_name or row.host!r}"


@destination.command("update")
@click.argument("organisation")
@click.argument("name")
@_TLS
@_TLS_SERVER_NAME
@click.pass_obj
@fail_cleanly
def destination_update(
    c: Any, organisation: str, name: str, tls: bool | None, tls_server_name: str | None
) -> None:
    """Switch DICOM TLS on or off for a destination, or change the name its certificate
    is checked for (an empty name: the host)."""
    from radsight.store import tenants

    rt = c.runtime()
    with rt.db.session() as s:
        o = tenants.get_organisation(s, organisation)
        row = tenants.update_destination(s, o.id, name, tls=tls, tls_server_name=tls_server_name)
        changed = {"tls": tls, "tls_server_name": tls_server_name}
        detail = {"name": name, **{k: v for k, v in changed.items() if v is not None}}
        _audit(s, "destination.update", o.id, detail)
        note = _tls_note(row) or " over plain DICOM (no TLS)"
    click.echo(f"destination {name!r} of {o.name!r}: {row.ae_title}@{row.host}:{row.port}{note}")


@destination.command("disable")
@click.argument("organisation")
@click.argument("name")
@click.pass_obj
@fail_cleanly
def destination_disable(c: Any, organisation: str, name: str) -> None:
    """Stop sending results there (pending deliveries fail until re-enabled and retried)."""
    _set_destination(c, organisation, name, False)


@destination.command("enable")
@click.argument("organisation")
@click.argument("name")
@click.pass_obj
@fail_cleanly
def destination_enable(c: Any, organisation: str, name: str) -> None:
    """Send results there again."""
    _set_destination(c, organisation, name, True)


def _set_destination(c: Any, organisation: str, name: str, enabled: bool) -> None:
    from radsight.store import tenants

    rt = c.runtime()
    with rt.db.session() as s:
        o = tenants.get_organisation(s, organisation)
        tenants.set_destination_enabled(s, o.id, name, enabled)
        _audit(s, "destination.update", o.id, {"name": name, "enabled": enabled})
    click.echo(f"destination {name!r} of {o.name!r} {'enabled' if enabled else 'disabled'}")


@destination.command("list")
@click.pass_obj
@fail_cleanly
def destination_list(c: Any) -> None:
    from radsight.store import tenants

    rt = c.runtime()
    with rt.db.session() as s:
        rows = tenants.list_destinations(s, scope=Scope.ALL)
        table(
            ["id", "organisation", "name", "ae_title", "host", "port", "enabled", "TLS"],
            [
                (
                    d.id,
                    d.organisation_id,
                    d.name,
                    d.ae_title,
                    d.host,
                    d.port,
                    d.enabled,
                    (d.tls_server_name or d.host) if d.tls else "no",
                )
                for d in rows
            ],
        )
