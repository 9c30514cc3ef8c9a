"""What the audit trail's hash chain costs (issue 16): time per event, and verification.

For SQLite (default) and, with ``--database-url``, PostgreSQL, in a fresh database:

* ``plain``: one event per unit of work, inserted without the chain (what Radsight did
  before migration 0006: an INSERT and a commit);
* ``chained``: the same through :func:`radsight.store.audit.record_audit` (chain lock,
  read of the head, SHA-256, INSERT, commit);
* ``chained x N``: N threads writing at once (gateways and workers), events per second;
* ``verify``: :func:`radsight.store.audit.verify_chain` over everything written.

    python bench/bench_audit_chain.py [--events 2000] [--threads 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--database-url")
    args = p.parse_args()

    from radsight.auth import Principal
    from radsight.config import load_settings
    from radsight.runtime import Runtime
    from radsight.store.audit import record_audit, verify_chain
    from radsight.store.clock import utcnow
    from radsight.store.tables import AuditEventRow

    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    extra = {"database_url": args.database_url} if args.database_url else {}
    rt = Runtime.open(load_settings(None, data_dir=tmp / "data", **extra))
    who = Principal(kind="token", name="bench", role="admin", organisation_id=None)
    detail = {"resource": "study", "study_instance_uid": "1.2.3.4.5.6.7.8.9", "via": "dicomweb"}
    n = args.events

    def timed(write: object) -> list[float]:
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            write(i)  # type: ignore[operator]
            times.append((time.perf_counter() - t0) * 1000)
        return times

    def plain(i: int) -> None:
        with rt.db.session() as s:
            s.add(AuditEventRow(actor="bench", action="plain", detail=detail,
                                remote_addr="10.0.0.1", created_at=utcnow()))  # fmt: skip

    def chained(i: int) -> None:
        with rt.db.session() as s:
            record_audit(s, who, "study.retrieve", detail=detail, remote_addr="10.0.0.1")

    try:
        # the plain rows first: they are "before the chain", as after migration 0006
        rows = [("plain", timed(plain)), ("chained", timed(chained))]
        per = n // args.threads
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=lambda: [chained(i) for i in range(per)])
            for _ in range(args.threads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        parallel_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with rt.db.session() as s:
            report = verify_chain(s)
        verify_s = time.perf_counter() - t0
        print(f"database: {rt.settings.database_url.split('@')[-1]}")
        for name, ms in rows:
            q = statistics.quantiles(ms, n=20)
            print(f"{name:>12}: p50 {statistics.median(ms):6.2f} ms  p95 {q[18]:6.2f} ms")
        ratio = statistics.median(rows[1][1]) / statistics.median(rows[0][1])
        print(f"chained/plain p50: {ratio:.2f}x")
        print(f"chained x {args.threads}: {per * args.threads / parallel_s:,.0f} events/s")
        print(f"verify: {report.events:,} events in {verify_s:.2f} s "
              f"({report.events / verify_s:,.0f}/s): {report.summary()}")  # fmt: skip
    finally:
        rt.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
