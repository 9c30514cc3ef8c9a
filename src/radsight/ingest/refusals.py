"""Refused DICOM connections, recorded in batches off the listener's path.

The lobby refuses a connection in microseconds; writing a row for each would let a flood
of refused attempts slow it down (and fill the table: issue 16 counted 200 rows in 10 s).
So a refusal is counted in memory and a background thread writes the counts every
``FLUSH_S``: into one rejection row per key per ``rejection_record_interval_s``
(:func:`radsight.store.studies.record_refused_association`, which also caps the rows one
address may have per interval), with a warning logged only when a new row starts.

The key is (reason, address) for a refusal that names no registered organisation (an
unregistered calling AE title, a protocol error, a failed TLS handshake): the calling AE
title is the attacker's to choose, so keying on it would give a row per random title. The
row keeps the distinct titles seen (exactly, up to ``TITLES_REMEMBERED``) and a few
samples in its message. A registered caller's refusal (outside its allowed hosts, over
its limit) is keyed by (reason, title, address, organisation): its admin needs the title.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from radsight.errors import RadsightError
from radsight.runtime import Runtime
from radsight.store import studies
from radsight.store.tables import RejectionRow

log = logging.getLogger(__name__)

FLUSH_S = 0.25
#: distinct keys held between flushes; beyond it new keys are only logged (a flood from
#: many addresses cannot grow memory)
MAX_PENDING_KEYS = 10_000

#: distinct calling AE titles remembered per aggregated row (beyond it: "more than")
TITLES_REMEMBERED = 256
#: rows whose titles are remembered (the oldest forgotten first)
ROWS_REMEMBERED = 256
#: titles held between flushes over all keys (memory stays bounded whatever the flood)
MAX_PENDING_TITLES = 100_000
#: titles quoted in a row's message
TITLE_SAMPLES = 5
#: the calling AE title shown on a row that stands for several
VARIOUS = "(various)"
TITLES_MARK = " | "

#: (reason, calling AE title or None when aggregated over titles, address, organisation)
_Key = tuple[str, str | None, str, int | None]


@dataclass
class _Tally:
    first: RadsightError
    count: int = 0
    titles: dict[str, None] = field(default_factory=dict)  # a set, in the order first seen
    more_titles: bool = False

    def add(self, title: str, room: bool) -> bool:
        """Count an attempt; True when ``title`` was newly kept."""
        self.count += 1
        if title in self.titles:
            return False
        if room and len(self.titles) < TITLES_REMEMBERED:
            self.titles[title] = None
            return True
        self.more_titles = True
        return False


@dataclass
class _RowTitles:
    first_message: str
    titles: list[str] = field(default_factory=list)  # in the order first seen
    more: bool = False

    def merge(self, tally: _Tally) -> None:
        known = set(self.titles)
        for t in (t for t in tally.titles if t not in known):
            if len(self.titles) < TITLES_REMEMBERED:
                self.titles.append(t)
            else:
                self.more = True
        self.more = self.more or tally.more_titles

    def describe(self, count: int) -> str:
        n = len(self.titles)
        shown = ", ".join(repr(t) for t in self.titles[:TITLE_SAMPLES])
        distinct = f"more than {n}" if self.more else str(n)
        return (
            f"{self.first_message}{TITLES_MARK}{count} attempts with {distinct} distinct "
            f"calling AE titles (e.g. {shown})"
        )


class RefusalLog:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._pending: dict[_Key, _Tally] = {}
        self._rows: OrderedDict[int, _RowTitles] = OrderedDict()  # flush thread only
        self._dropped = 0
        self._titles_held = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name="radsight-dicom-refusals", daemon=True
        )
        self._thread.start()

    def record(
        self, exc: RadsightError, organisation_id: int | None, ae_title: str, address: str
    ) -> None:
        title = ae_title.strip()[:16]
        by_title = organisation_id is not None  # a registered caller: its title matters
        key = (exc.code, title if by_title else None, address[:64], organisation_id)
        with self._lock:
            tally = self._pending.get(key)
            if tally is None:
                if len(self._pending) >= MAX_PENDING_KEYS:
                    self._dropped += 1
                    return
                tally = self._pending[key] = _Tally(exc)
            if tally.add(title, self._titles_held < MAX_PENDING_TITLES):
                self._titles_held += 1

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(10)
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_S)
            try:
                self.flush()
            except Exception:  # the loop's catch-all: records are lost, the listener is not
                log.exception("could not record refused associations")

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            dropped, self._dropped = self._dropped, 0
            self._titles_held = 0
        if dropped:
            log.warning("%d refused associations not recorded (too many at once)", dropped)
        if not pending:
            return
        with self.rt.db.session() as s:
            for (code, ae, address, org), tally in pending.items():
                first_title = ae if ae is not None else next(iter(tally.titles), "")
                row, new = studies.record_refused_association(
                    s,
                    organisation_id=org,
                    calling_ae_title=first_title,
                    remote_addr=address,
                    error_code=code,
                    message=tally.first.message,
                    interval_s=self.rt.settings.rejection_record_interval_s,
                    attempts=tally.count,
                    match_title=ae is not None,
                )
                if new:
                    log.warning(
                        "refused association from %r at %s: %s: %s",
                        first_title,
                        address,
                        code,
                        tally.first.message,
                    )
                if ae is None and row.error_code == code:
                    self._describe_titles(row, new, tally)

    def _describe_titles(self, row: RejectionRow, new: bool, tally: _Tally) -> None:
        """Put the distinct calling AE titles an aggregated row stands for in its message."""
        seen = None if new else self._rows.pop(row.id, None)
        if seen is None:  # a new row, or one this process has not seen (restart)
            first = row.message.split(TITLES_MARK, 1)[0]
            old = [] if new or row.calling_ae_title == VARIOUS else [row.calling_ae_title]
            seen = _RowTitles(first, old, more=row.calling_ae_title == VARIOUS)
        seen.merge(tally)
        self._rows[row.id] = seen
        while len(self._rows) > ROWS_REMEMBERED:
            self._rows.popitem(last=False)
        if len(seen.titles) > 1 or seen.more:
            row.message = seen.describe(row.count)
            row.calling_ae_title = VARIOUS
