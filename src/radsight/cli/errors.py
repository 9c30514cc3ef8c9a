"""The CLI's one error edge: ``error[<code>]: <message>`` on stderr and exit status 1.

Every :class:`~radsight.errors.RadsightError` prints its code and message, including a
command-line value that cannot be used (:class:`~radsight.errors.InvalidInput`,
``error[invalid_input]``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from radsight.errors import RadsightError


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`RadsightError` from a command into a clean message and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RadsightError as exc:
            click.echo(f"error[{exc.code}]: {exc.message}", err=True)
            sys.exit(1)

    return wrapper
