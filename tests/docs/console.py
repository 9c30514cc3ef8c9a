"""Console transcripts in the docs: parse ``$ command`` lines, run them, compare the output.

A transcript is a fenced block with the info string ``console``. A line that starts with
``$ `` is a command (a trailing ``\\`` continues it on the next line); the lines up to the next
command are the output the command must print (stdout and stderr together, as a terminal shows
them). ``...`` is a wildcard: alone on a line it stands for any number of lines, inside a line
for any text (doctest's ELLIPSIS); runs of spaces compare equal whatever their length, so a
table whose columns widen with a longer id still matches.

A command of the form ``[NAME=value ...] radsight ARGS`` runs the real ``radsight`` command
line in a child forked from the test process (the same code as the installed script, without
paying the 1.5 s import each time); anything else (``$(...)``, pipes, ``export``, ``curl``) runs
in ``bash``. Variables a command exports stay set for the next commands of the same page.

A command that ends with ``&`` runs in the background, in its own process group, with its
output in ``background-N.log`` of the page's folder; the harness stops it (SIGTERM) when the
docs test ends. ``radsight serve &`` is waited for until ``/health`` answers. Every page
gets free ports in ``RADSIGHT_HTTP_PORT`` and ``RADSIGHT_DICOM_PORT``, and ``:8042`` (the
default HTTP port the pages show) in a command is that page's HTTP port, and ``127.0.0.1 11112``
(dcmtk's host and port arguments) its DICOM port.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_OPERATORS = set("();<>|&")
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Command:
    """One ``$ command`` of a transcript and the output the page shows for it."""

    line: int  # 1-based line of the ``$`` in the page
    text: str  # the command, continuation lines joined
    expected: str  # the lines shown after it, joined by newlines
    output_start: int  # 0-based index in the block's lines of the first output line
    output_end: int  # one past the last output line (trailing blank lines excluded)


def parse_transcript(source: str, first_line: int) -> list[Command]:
    """Split a transcript block into commands; `first_line` is the page line of its line 0."""
    lines = source.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if lines[i].strip():
                raise ValueError(
                    f"line {first_line + i}: a transcript starts with a `$ command` line, "
                    f"not {lines[i]!r}"
                )
            i += 1
            continue
        start = i
        text = lines[i][2:]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        i += 1
        out_start = i
        while i < len(lines) and not lines[i].startswith("$ "):
            i += 1
        out_end = i
        while out_end > out_start and not lines[out_end - 1].strip():
            out_end -= 1
        expected = "\n".join(lines[out_start:out_end])
        commands.append(Command(first_line + start, text, expected, out_start, out_end))
    return commands


def normalise(output: str) -> str:
    """Output as compared: trailing spaces and trailing blank lines removed."""
    return "\n".join(line.rstrip() for line in output.rstrip().splitlines())


def matches(expected: str, actual: str) -> bool:
    """Whether `actual` output is what the page shows, wildcards and spacing allowed for."""
    want, got = normalise(expected), normalise(actual)
    if want == got:
        return True
    return _CHECKER.check_output(want + "\n", got + "\n", _FLAGS)


def _radsight_argv(command: str) -> tuple[dict[str, str], list[str]] | None:
    """``(env, args)`` when `command` is ``[NAME=value ...] radsight ARGS``, else None."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    env: dict[str, str] = {}
    while tokens and "=" in tokens[0] and tokens[0].split("=", 1)[0].isidentifier():
        name, value = tokens.pop(0).split("=", 1)
        env[name] = value
    if not tokens or tokens[0] != "radsight":
        return None
    # anything a shell would expand, redirect or chain goes to bash
    if "$" in command or "`" in command or any(set(tok) <= _OPERATORS for tok in tokens):
        return None
    return env, tokens[1:]


#: what the commands import lazily: imported once in the parent, so that no child pays for it
#: (a module that another change renames or removes is simply not warmed)
_WARM_MODULES = (
    "radsight.cli.people",
    "radsight.cli.quality",
    "radsight.server",
    "radsight.runtime",
    "radsight.logs",
    "radsight.algorithms.registry",
    "radsight.pipeline.routing",
    "radsight.store",
    "radsight.store.db",
    "alembic.command",
)


def _warm() -> None:
    for name in _WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _run_forked(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run ``radsight ARGS`` in a forked child (the CLI is imported once, in the parent)."""
    from radsight.cli.main import cli

    _warm()

    with tempfile.TemporaryFile() as out:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                cli.main(args=args, prog_name="radsight", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # the child must end here whatever happens
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + TIMEOUT_S
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise TimeoutError(f"radsight {shlex.join(args)} ran over {TIMEOUT_S:.0f} s")
            time.sleep(0.005)
        out.seek(0)
        return out.read().decode("utf-8", "replace")


def _run_bash(command: str, env: dict[str, str], cwd: Path) -> str:
    """Run `command` in bash; the variables it exports are written back into `env`."""
    with tempfile.NamedTemporaryFile(suffix=".env") as env_file:
        script = f'{command}\n__rc=$?\nenv -0 > "{env_file.name}"\nexit $__rc\n'
        res = subprocess.run(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        raw = Path(env_file.name).read_bytes().decode("utf-8", "replace")
    exported = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    if exported:
        env.clear()
        env.update(exported)
    return res.stdout


def _start_background(
    command: str, env: dict[str, str], cwd: Path, background: list[subprocess.Popen[bytes]]
) -> str:
    log_path = cwd / f"background-{len(background) + 1}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    background.append(proc)
    if "radsight serve" in command:
        url = f"http://127.0.0.1:{env['RADSIGHT_HTTP_PORT']}/health"
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"`{command}` did not answer {url}:\n{log_path.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
    return ""


def stop_background(background: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each background process group, then SIGKILL what is left after 30 s."""
    for proc in background:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in background:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    background.clear()


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def page_ports(command: str, env: dict[str, str]) -> str:
    """`command` with the default ports the pages show replaced by the page's own ports.

    ``:8042`` (a URL's HTTP port) becomes ``RADSIGHT_HTTP_PORT``, and ``127.0.0.1 11112``
    (the host and port arguments of dcmtk's ``echoscu``/``storescu``) ``RADSIGHT_DICOM_PORT``.
    """
    if "RADSIGHT_HTTP_PORT" in env:
        command = command.replace(":8042", f":{env['RADSIGHT_HTTP_PORT']}")
    if "RADSIGHT_DICOM_PORT" in env:
        command = re.sub(
            r"\b127\.0\.0\.1 11112\b", f"127.0.0.1 {env['RADSIGHT_DICOM_PORT']}", command
        )
    return command


def run_command(
    command: str, env: dict[str, str], cwd: Path, background: list[subprocess.Popen[bytes]]
) -> str:
    """What `command` prints, run in `cwd` with `env` (updated with what it exports)."""
    command = page_ports(command, env)
    if command.rstrip().endswith("&") and not command.rstrip().endswith("&&"):
        return _start_background(command.rstrip()[:-1], env, cwd, background)
    parsed = _radsight_argv(command)
    # fork only a single-threaded process: a lock held by another thread would stay held
    if parsed is not None and threading.active_count() == 1 and hasattr(os, "fork"):
        extra, args = parsed
        return _run_forked(args, {**env, **extra}, cwd)
    return _run_bash(command, env, cwd)
