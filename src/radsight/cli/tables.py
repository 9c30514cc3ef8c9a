"""The plain-text tables the list commands print (one header row, a rule, aligned columns)."""

from __future__ import annotations

import click


def table(headers: list[str], rows: list[tuple], none: str = "None") -> None:
    """Print ``rows`` under ``headers``, columns padded to their widest cell; ``none`` is
    what an empty (None) cell shows; "(none)" when there are no rows."""
    cells = [[str(h) for h in headers]] + [[none if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))
    if not rows:
        click.echo("(none)")
