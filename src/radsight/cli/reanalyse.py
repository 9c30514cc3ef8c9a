"""``radsight reanalyse``: route chosen studies again with the rules and versions in force.

Runs on the server's machine against its database (the operator's own access, every
organisation); the jobs it creates are run by the server's workers. See
:mod:`radsight.pipeline.reanalysis` for what happens to each (study, algorithm version).
"""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import click

from radsight.cli.errors import fail_cleanly
from radsight.cli.tables import table
from radsight.errors import InvalidInput

#: at most this many rows of the per-study table are printed (the counts cover all)
SHOWN = 200


@dataclass(frozen=True)
class Operator:
    """The CLI's caller, as the audit trail records it."""

    name: str
    organisation_id: int | None = None
    user_id: int | None = None


def parse_when(value: str | None, *, end_of_day: bool) -> datetime | None:
    """``YYYY-MM-DD`` (a whole day: ``until`` includes it) or an ISO date and time, UTC."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    if when.tzinfo is not None:
        when = when.astimezone(tz=None).replace(tzinfo=None)  # the store keeps naive UTC
    if end_of_day and len(value) == 10:
        when += timedelta(days=1)
    return when


@click.command()
@click.option("--study", "studies", multiple=True, help="Study Instance UID (repeatable)")
@click.option("--organisation", help="every study of this organisation (with --since/--until)")
@click.option("--since", help="received on or after this date (YYYY-MM-DD, UTC)")
@click.option("--until", help="received on or before this date (YYYY-MM-DD, UTC)")
@click.option("--algorithm", "ref", help="only this algorithm: NAME or NAME@VERSION")
@click.option("--force", is_flag=True, help="re-analyse results even if their input is unchanged")
@click.option("--dry-run", is_flag=True, help="list what would happen; change nothing")
@click.option(
    "--limit", default=10000, show_default=True, help="refuse a selection of more studies"
)
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
@click.option("--no-progress", is_flag=True, help="no progress bar (shown on a terminal)")
@click.pass_obj
@fail_cleanly
def reanalyse(
    obj: Any,
    studies: tuple[str, ...],
    organisation: str | None,
    since: str | None,
    until: str | None,
    ref: str | None,
    force: bool,
    dry_run: bool,
    limit: int,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Re-analyse studies: new versions, late instances, changed rules."""
    from radsight.algorithms.registry import Registry
    from radsight.pipeline.reanalysis import Selection
    from radsight.pipeline.reanalysis import reanalyse as run
    from radsight.pipeline.routing import load_rules
    from radsight.store.scope import Scope

    selection = Selection(
        study_instance_uids=studies,
        organisation=organisation,
        since=parse_when(since, end_of_day=False),
        until=parse_when(until, end_of_day=True),
        algorithm=ref,
        force=force,
        limit=limit,
    )
    selection.check()
    settings = obj.settings
    registry = Registry.from_entry_points()
    rules = load_rules(settings.routing_rules, known_algorithms=registry.refs())
    rt = obj.runtime()
    bars = ExitStack()  # the bar appears with the first study, once the total is known
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if no_progress or as_json or total < 2 or not sys.stderr.isatty():
            return
        if bar is None:
            bar = bars.enter_context(
                click.progressbar(length=total, label="studies", file=sys.stderr)
            )
        bar.update(1)

    try:
        summary = run(
            rt,
            registry,
            rules,
            selection,
            scope=Scope.ALL,
            actor=Operator(f"cli:{getpass.getuser()}"),
            dry_run=dry_run,
            progress=progress,
        )
    finally:
        bars.close()
        rt.close()
    counts = summary.counts()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": summary.dry_run,
                    "studies": summary.studies,
                    "counts": counts,
                    "job_ids": summary.job_ids,
                    "decisions": [asdict(d) for d in summary.decisions],
                },
                indent=2,
            )
        )
        return
    rows = [
        (
            d.study_instance_uid,
            f"{d.algorithm_name} {d.algorithm_version}".strip() or "-",
            d.action,
            d.revision,
            d.job_id if d.job_id is not None else "-",
            d.reason,
        )
        for d in summary.decisions[:SHOWN]
    ]
    table(["study", "algorithm", "action", "revision", "job", "reason"], rows)
    if len(summary.decisions) > SHOWN:
        click.echo(f"... and {len(summary.decisions) - SHOWN} more (--json lists all)")
    verb = "jobs that would be created" if dry_run else "jobs created"
    click.echo(f"studies selected: {summary.studies}")
    click.echo(
        f"{verb}: {counts['analyse']} new analyses, "
        f"{counts['reanalyse']} re-analyses of changed studies"
    )
    click.echo(
        f"{'would be promoted' if dry_run else 'promoted'} (shadow results delivered): "
        f"{counts['promote']}; up to date: {counts['up_to_date']}; "
        f"already queued: {counts['pending']}; skipped: {counts['skipped']}"
    )
    if dry_run:
        click.echo("dry run: nothing was changed")
