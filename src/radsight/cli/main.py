"""The ``radsight`` command line. Errors print ``error[code]: message`` and exit 1."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from radsight.cli.errors import fail_cleanly
from radsight.cli.tables import table
from radsight.config import Settings, load_settings


class _Ctx:
    def __init__(self, config: Path | None, data_dir: Path | None) -> None:
        self.config = config
        self.data_dir = data_dir
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, data_dir=self.data_dir)
        return self._settings

    def runtime(self):  # type: ignore[no-untyped-def]
        from radsight.runtime import Runtime

        return Runtime.open(self.settings)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group()
@click.option("--config", type=click.Path(path_type=Path), help="TOML settings file")
@click.option("--data-dir", type=click.Path(path_type=Path), help="overrides RADSIGHT_DATA_DIR")
@click.version_option(package_name="radsight")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, data_dir: Path | None) -> None:
    """Radsight: an open AI radiology platform."""
    ctx.obj = _Ctx(config, data_dir)


@cli.command()
@click.option("--dicom-port", type=int, help="overrides RADSIGHT_DICOM_PORT")
@click.option("--http-port", type=int, help="overrides RADSIGHT_HTTP_PORT")
@click.option("--workers", type=int, help="worker processes (0: none)")
@click.option("--no-workers", is_flag=True, help="a gateway: receive and serve, analyse nothing")
@pass_ctx
@fail_cleanly
def serve(
    c: _Ctx, dicom_port: int | None, http_port: int | None, workers: int | None, no_workers: bool
) -> None:
    """Run the DICOM listener, the HTTP API and the workers."""
    from radsight.logs import configure_logging
    from radsight.server import Server

    c._settings = load_settings(
        c.config,
        data_dir=c.data_dir,
        dicom_port=dicom_port,
        http_port=http_port,
        workers=0 if no_workers else workers,
    )
    configure_logging(c.settings)
    server = Server.prepare(c.settings)
    server.start()
    if c.settings.log_format == "text":
        click.echo(
            f"radsight serving: DICOM {c.settings.ae_title}@port {server.dicom_port}, "
            f"HTTP {'https' if c.settings.https_cert else 'http'}://{c.settings.http_host}:"
            f"{c.settings.http_port} (docs at /docs)",
            err=True,
        )
    try:
        server.run_http()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; we are stopped
        pass


@cli.command()
@click.option("--queues", help="comma-separated queues (default: all analyse.* and delivery)")
@click.option("--concurrency", type=int, default=2, show_default=True, help="processes")
@pass_ctx
@fail_cleanly
def worker(c: _Ctx, queues: str | None, concurrency: int) -> None:
    """Run a Celery worker that analyses and delivers (job_runner = "celery")."""
    from radsight.logs import configure_logging
    from radsight.pipeline.celery_runner import QUEUES, run_worker

    configure_logging(c.settings)
    chosen = [q.strip() for q in queues.split(",")] if queues else QUEUES
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown:
        raise click.BadParameter(f"unknown queues {unknown}; known: {', '.join(QUEUES)}")
    run_worker(c.settings, chosen, concurrency)


@cli.command()
@pass_ctx
@fail_cleanly
def migrate(c: _Ctx) -> None:
    """Create or upgrade the database schema."""
    from radsight.store.db import migrate as do_migrate

    do_migrate(c.settings.resolved_database_url)
    click.echo("database is at the newest schema")


def _audit(s: Any, action: str, organisation_id: int | None, detail: dict[str, Any]) -> None:
    """A change made from the command line, in the audit trail as ``cli:<login>``."""
    from radsight.cli.people import _operator
    from radsight.store.audit import record_audit

    record_audit(s, _operator(), action, organisation_id=organisation_id, detail=detail)


@cli.group()
def org() -> None:
    """Organisations (tenants) and their regions."""


@org.command("add")
@click.argument("name")
@click.option("--region", required=True, help="region the organisation belongs to")
@pass_ctx
@fail_cleanly
def org_add(c: _Ctx, name: str, region: str) -> None:
    from radsight.store import tenants

    rt = c.runtime()
    with rt.db.session() as s:
        row = tenants.create_organisation(s, name, region)
        _audit(s, "organisation.create", row.id, {"name": name, "region": region})
    click.echo(f"organisation {row.id} {name!r} in region {region!r}")


@org.command("list")
@pass_ctx
@fail_cleanly
def org_list(c: _Ctx) -> None:
    from radsight.store import tenants
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        rows = tenants.list_organisations(s, scope=Scope.ALL)
        table(["id", "name", "region"], [(o.id, o.name, r.name) for o, r in rows])


@cli.group()
def ae() -> None:
    """Calling AE titles an organisation sends studies from."""


_ALLOWED_HOST = click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="an address or network (10.1.2.0/24) it may connect from; repeat for more "
    "(none: any address)",
)
_TLS_SUBJECT = click.option(
    "--tls-subject",
    default=None,
    help="with DICOM TLS, the subject its client certificate must have (RFC 4514, as "
    "openssl x509 -noout -subject -nameopt RFC2253 prints it)",
)


@ae.command("add")
@click.argument("organisation")
@click.argument("ae_title")
@click.option("--description", default="")
@_ALLOWED_HOST
@_TLS_SUBJECT
@pass_ctx
@fail_cleanly
def ae_add(
    c: _Ctx,
    organisation: str,
    ae_title: str,
    description: str,
    allowed_hosts: tuple[str, ...],
    tls_subject: str | None,
) -> None:
    from radsight.store import tenants
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        o = tenants.get_organisation(s, organisation)
        row = tenants.create_application_entity(
            s,
            o.id,
            ae_title,
            description,
            allowed_hosts=allowed_hosts,
            tls_client_subject=tls_subject or "",
            shown_to=Scope.ALL,
        )
        hosts = ", ".join(row.allowed_hosts) or "any address"
        detail = {
            "ae_title": row.ae_title,
            "description": description,
            "allowed_hosts": row.allowed_hosts,
        }
        _audit(s, "ae_title.create", o.id, detail)
    click.echo(f"AE title {ae_title!r} now sends for {o.name!r} from {hosts}")


@ae.command("update")
@click.argument("organisation")
@click.argument("ae_title")
@click.option("--description", default=None)
@_ALLOWED_HOST
@click.option("--any-host", is_flag=True, help="allow any source address again")
@_TLS_SUBJECT
@pass_ctx
@fail_cleanly
def ae_update(
    c: _Ctx,
    organisation: str,
    ae_title: str,
    description: str | None,
    allowed_hosts: tuple[str, ...],
    any_host: bool,
    tls_subject: str | None,
) -> None:
    """Change an AE title's description, allowed hosts or TLS client subject."""
    from radsight.store import tenants

    if any_host and allowed_hosts:
        raise click.UsageError("give --allowed-host or --any-host, not both")
    rt = c.runtime()
    with rt.db.session() as s:
        o = tenants.get_organisation(s, organisation)
        row = tenants.update_application_entity(
            s,
            o.id,
            ae_title,
            description=description,
            allowed_hosts=[] if any_host else (allowed_hosts or None),
            tls_client_subject=tls_subject,
        )
        hosts = ", ".join(row.allowed_hosts) or "any address"
        subject = row.tls_client_subject or "any"
        changed = {
            "description": description,
            "allowed_hosts": row.allowed_hosts if (any_host or allowed_hosts) else None,
            "tls_client_subject": tls_subject,
        }
        detail = {
            "ae_title": row.ae_title,
            "changed": {k: v for k, v in changed.items() if v is not None},
        }
        _audit(s, "ae_title.update", o.id, detail)
    click.echo(f"AE title {row.ae_title!r}: allowed hosts {hosts}; TLS subject {subject}")


@ae.command("list")
@pass_ctx
@fail_cleanly
def ae_list(c: _Ctx) -> None:
    from radsight.store import tenants
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        rows = tenants.list_application_entities(s, scope=Scope.ALL)
        table(
            ["id", "organisation", "ae_title", "allowed hosts", "TLS subject", "description"],
            [
                (
                    a.id,
                    a.organisation_id,
                    a.ae_title,
                    ", ".join(a.allowed_hosts) or "any",
                    a.tls_client_subject or "",
                    a.description,
                )
                for a in rows
            ],
        )


@cli.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--org", "organisation", required=True, help="organisation name or id")
@pass_ctx
@fail_cleanly
def import_cmd(c: _Ctx, path: Path, organisation: str) -> None:
    """Import a folder or zip of DICOM files (the server routes them when it runs).

    Refused files are listed at the end; the exit status is 1 when any was refused.
    """
    from tqdm import tqdm

    from radsight.ingest.importer import count_sources, import_path
    from radsight.store import tenants

    rt = c.runtime()
    with rt.db.session() as s:
        org_id = tenants.get_organisation(s, organisation).id
    # each rejection is listed below; per-file warnings would break the progress bar
    logging.getLogger("radsight.ingest").setLevel(logging.ERROR)
    with tqdm(total=count_sources(path), unit="file", desc="import", file=sys.stderr) as bar:
        report = import_path(rt, path, org_id, progress=lambda _n: bar.update(1))
    click.echo(
        f"{report.stored} stored, {report.duplicates} already there, "
        f"{len(report.rejected)} rejected, {len(report.study_uids)} studies"
    )
    for name, code, message in report.rejected[:20]:
        click.echo(f"  rejected {name}: {code}: {message}")
    if len(report.rejected) > 20:
        click.echo(f"  ... and {len(report.rejected) - 20} more (radsight rejections)")
    if report.rejected:
        sys.exit(1)  # a script sees that something was refused (listed above)


@cli.command()
@click.option("--state", help="queued, running, done, failed or dead")
@click.option("--kind", type=click.Choice(["analyse", "deliver"]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@fail_cleanly
def jobs(c: _Ctx, state: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Jobs and their state."""
    from radsight.store import jobs as jobstore
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        rows = jobstore.list_jobs(s, scope=Scope.ALL, state=state, kind=kind, limit=limit)
        data = [
            (
                j.id,
                j.kind,
                j.study_id,
                f"{j.algorithm_name} {j.algorithm_version}".strip() or f"dest {j.destination_id}",
                j.state,
                f"{j.attempts}/{j.max_attempts}",
                (j.error_code + ": " + j.error)[:60] if j.error_code else "",
            )
            for j in rows
        ]
    if as_json:
        keys = ["id", "kind", "study_id", "target", "state", "attempts", "error"]
        click.echo(json.dumps([dict(zip(keys, d, strict=True)) for d in data], indent=2))
    else:
        table(["id", "kind", "study", "algorithm/destination", "state", "tries", "error"], data)


@cli.command()
@click.argument("job_id", type=int)
@pass_ctx
@fail_cleanly
def retry(c: _Ctx, job_id: int) -> None:
    """Put a failed or dead-lettered job back in the queue."""
    from radsight.store import jobs as jobstore
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        was = jobstore.get_job(s, job_id, scope=Scope.ALL).state
        job = jobstore.retry_job(s, job_id, scope=Scope.ALL)
        kind = job.kind
        _audit(s, "job.retry", job.organisation_id, {"job_id": job_id, "kind": kind, "was": was})
    click.echo(f"job {job_id} ({job.kind}) queued again")


@cli.command()
@click.option("--state")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
@fail_cleanly
def studies(c: _Ctx, state: str | None, limit: int) -> None:
    """Studies received, with their state."""
    from radsight.store import studies as studystore
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        rows = studystore.list_studies(s, scope=Scope.ALL, state=state, limit=limit)
        table(
            ["id", "org", "study_instance_uid", "type", "instances", "state", "reason"],
            [
                (
                    r.id,
                    r.organisation_id,
                    r.study_instance_uid,
                    r.study_type,
                    r.num_instances,
                    r.state,
                    r.state_reason[:60],
                )
                for r in rows
            ],
        )


@cli.command()
@click.option("--limit", default=50, show_default=True)
@pass_ctx
@fail_cleanly
def rejections(c: _Ctx, limit: int) -> None:
    """Refused instances and associations, newest first."""
    from radsight.store import studies as studystore
    from radsight.store.scope import Scope

    rt = c.runtime()
    with rt.db.session() as s:
        rows = studystore.list_rejections(s, scope=Scope.ALL, limit=limit)
        table(
            [
                "id",
                "when",
                "last",
                "count",
                "source",
                "calling AE",
                "address",
                "code",
                "status",
                "message",
            ],
            [
                (
                    r.id,
                    r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    r.last_at.strftime("%H:%M:%S") if r.last_at else "",
                    r.count,
                    r.source,
                    r.calling_ae_title,
                    r.remote_addr,
                    r.error_code,
                    f"0x{r.dimse_status:04X}" if r.dimse_status is not None else "",
                    r.message[:70],
                )
                for r in rows
            ],
        )


@cli.command()
def algorithms() -> None:
    """Registered algorithms (entry points in the radsight.algorithms group)."""
    from radsight.algorithms.registry import Registry

    reg = Registry.from_entry_points()
    table(
        ["name", "version", "study types", "findings"],
        [
            (a.name, a.version, ",".join(a.study_types), ",".join(f.key for f in a.findings))
            for a in reg.all()
        ],
    )


@cli.group()
def rules() -> None:
    """Routing rules."""


@rules.command("check")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@fail_cleanly
def rules_check(path: Path | None) -> None:
    """Validate a rules file (default: the built-in rules)."""
    from radsight.algorithms.registry import Registry
    from radsight.pipeline.routing import load_rules

    rs = load_rules(path, known_algorithms=Registry.from_entry_points().refs())
    click.echo(f"rules version {rs.version} ({rs.digest}): {len(rs.rules)} rules, valid")
    for r in rs.rules:
        click.echo(f"  {r.name}: {','.join(r.study_types) or 'any'} -> {', '.join(r.algorithms)}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo-out"))
@click.option("--studies", "n_studies", default=3, show_default=True)
@click.option("--timeout", default=120.0, show_default=True, help="seconds to wait for results")
@fail_cleanly
def demo(out_dir: Path, n_studies: int, timeout: float) -> None:
    """Start a server on free ports, send generated studies, collect the results in OUT."""
    from radsight.cli.demo import run_demo

    sys.exit(run_demo(out_dir, n_studies, timeout))


def _register_people_commands() -> None:
    from radsight.cli.people import token, user

    cli.add_command(user)
    cli.add_command(token)
    from radsight.cli.audit import audit

    cli.add_command(audit)


_register_people_commands()


def _register_quality_commands() -> None:
    from radsight.cli.quality import evaluate, monitor, threshold

    cli.add_command(evaluate)
    cli.add_command(threshold)
    cli.add_command(monitor)


_register_quality_commands()


def _register_algorithm_commands() -> None:
    from radsight.cli.algorithms import algorithm

    cli.add_command(algorithm)


_register_algorithm_commands()


def _register_reanalysis_command() -> None:
    from radsight.cli.destinations import destination
    from radsight.cli.reanalyse import reanalyse

    cli.add_command(reanalyse)
    cli.add_command(destination)


_register_reanalysis_command()


if __name__ == "__main__":
    cli()
