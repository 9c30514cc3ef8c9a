"""Refused DICOM connections, recorded in batches off the listener's path.

The lobby refuses a connection in microseconds; writing a row for each would let a flood
of refused attempts slow it down (and fill the table: issue 16 counted 200 rows in 10 s).
So a refusal is counted in memory, per (reason, calling AE title, address, organisation),
and a background thread writes the counts every ``FLUSH_S``: into one rejection row per
key per ``rejection_record_interval_s`` (:func:`radsight.store.studies.record_refused_association`),
with a warning logged only when a new row starts.
"""

from __future__ import annotations

import logging
import threading

from radsight.errors import RadsightError
from radsight.runtime import Runtime
from radsight.store import studies

log = logging.getLogger(__name__)

FLUSH_S = 0.25
#: distinct keys held between flushes; beyond it new keys are only logged (a flood from
#: many addresses cannot grow memory)
MAX_PENDING_KEYS = 10_000

_Key = tuple[str, str, str, int | None]


class RefusalLog:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._pending: dict[_Key, tuple[RadsightError, int]] = {}
        self._dropped = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name="radsight-dicom-refusals", daemon=True
        )
        self._thread.start()

    def record(
        self, exc: RadsightError, organisation_id: int | None, ae_title: str, address: str
    ) -> None:
        key = (exc.code, ae_title.strip()[:16], address[:64], organisation_id)
        with self._lock:
            if key in self._pending:
                first, n = self._pending[key]
                self._pending[key] = (first, n + 1)
            elif len(self._pending) < MAX_PENDING_KEYS:
                self._pending[key] = (exc, 1)
            else:
                self._dropped += 1

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
        if dropped:
            log.warning("%d refused associations not recorded (too many at once)", dropped)
        if not pending:
            return
        with self.rt.db.session() as s:
            for (code, ae, address, org), (exc, n) in pending.items():
                row, new = studies.record_refused_association(
                    s,
                    organisation_id=org,
                    calling_ae_title=ae,
                    remote_addr=address,
                    error_code=code,
                    message=exc.message,
                    interval_s=self.rt.settings.rejection_record_interval_s,
                    attempts=n,
                )
                if new:
                    log.warning(
                        "refused association from %r at %s: %s: %s", ae, address, code, exc.message
                    )
