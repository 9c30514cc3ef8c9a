"""The CLI's one error edge: ``error[<code>]: <message>`` on stderr and exit status 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from radsight.errors import RadsightError


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`RadsightError` or ``ValueError`` from a command into a clean message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RadsightError as exc:
            click.echo(f"error[{exc.code}]: {exc.message}", err=True)
            sys.exit(1)
        except ValueError as exc:
            click.echo(f"error[invalid_value]: {exc}", err=True)
            sys.exit(1)

    return wrapper
