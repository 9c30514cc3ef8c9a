"""Reloading the routing rules while serving (docs/routing.md, "Changing rules while
serving"). Pure: it reads the rules file, nothing else.

:class:`RulesWatcher` looks at the file each time :meth:`RulesWatcher.check` is called
(``radsight serve`` calls it every ``rules_reload_interval_s``). The file's modification
time and size are the cheap first look; only when they change is the file read, and only
when its content digest differs from the rules in force is it parsed and validated like at
start-up (:func:`radsight.pipeline.routing.parse_rules`, against the registered
algorithms). The caller swaps in the new :class:`~radsight.pipeline.routing.RuleSet` as a
whole; a file that does not load leaves the rules in force as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from radsight.errors import RoutingRulesError
from radsight.pipeline.routing import RuleSet, parse_rules


@dataclass(frozen=True)
class RulesCheck:
    """What one look at the rules file found.

    ``outcome``: ``unchanged`` (the rules in force are the file's, or the same broken text
    was reported already), ``reloaded`` (``rules`` is the new rule set), ``invalid``
    (``error`` says why; the rules in force stay), ``restored`` (the file is the rules in
    force again after it was invalid).
    """

    outcome: Literal["unchanged", "reloaded", "invalid", "restored"]
    rules: RuleSet
    previous: RuleSet | None = None
    error: str = ""
    digest: str = ""


def digest_of(text: str) -> str:
    """The digest :func:`~radsight.pipeline.routing.parse_rules` gives a rule set."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RulesWatcher:
    """The rules in force for one rules file, and whether the file has changed since.

    Not thread-safe: one thread (the scheduler) checks; others only read :attr:`rules`,
    which is replaced as a whole, never changed in place.
    """

    def __init__(self, path: Path, rules: RuleSet, known_algorithms: set[str] | None) -> None:
        self.path = Path(path)
        self.rules = rules
        self.known_algorithms = known_algorithms
        # not looked at yet: the first check reads the file once, so that a change made
        # between loading ``rules`` and creating the watcher is not missed
        self._stat: tuple[int, int] | None = None
        #: the digest of the broken text reported last (reported once, not every look)
        self._bad_digest = ""

    def _look(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self) -> RulesCheck:
        """Look at the file; parse it when its content differs from the rules in force."""
        stat = self._look()
        if stat == self._stat and (stat is not None or self._bad_digest):
            return RulesCheck("unchanged", self.rules)
        try:
            text = self.path.read_text()
        except OSError as exc:
            error = f"cannot read routing rules {self.path}: {exc.strerror}"
            return self._invalid(digest_of(error), error, stat)
        digest = digest_of(text)
        self._stat = stat
        if digest == self.rules.digest:  # touched, or put back after a broken version
            restored, self._bad_digest = bool(self._bad_digest), ""
            return RulesCheck("restored" if restored else "unchanged", self.rules)
        if digest == self._bad_digest:
            return RulesCheck("unchanged", self.rules)
        try:
            new = parse_rules(text, source=str(self.path), known_algorithms=self.known_algorithms)
        except RoutingRulesError as exc:
            return self._invalid(digest, exc.message, stat)
        previous, self.rules, self._bad_digest = self.rules, new, ""
        return RulesCheck("reloaded", new, previous=previous, digest=digest)

    def _invalid(self, digest: str, error: str, stat: tuple[int, int] | None) -> RulesCheck:
        self._stat = stat
        if digest == self._bad_digest:
            return RulesCheck("unchanged", self.rules)
        self._bad_digest = digest
        return RulesCheck("invalid", self.rules, error=error, digest=digest)
