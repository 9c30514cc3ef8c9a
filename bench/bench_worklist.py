"""The radiologist's worklist over 100,000 studies: server time per query (issue 3).

Fills a fresh database (SQLite by default, or ``--database-url`` for PostgreSQL) with
``--studies`` studies of one organisation (plus 10 % more in a second one, which the
queries must skip), inserted directly with SQLAlchemy bulk inserts, and a result row for
each analysed study. Then times, in this process, what the server does per request:

* ``store``: :func:`radsight.store.worklist.list_worklist` alone (the SQL);
* ``http``: the whole request through the ASGI app (``GET /api/worklist`` JSON, and the
  HTML page ``GET /worklist`` as a signed-in radiologist), measured server-side by
  FastAPI's TestClient without a network in between.

Queries: the first page; a deep page (keyset cursor after 50,000 rows); filtered (study
type + status; a one-week date range); searched (patient ID, accession number, the
start of a name). Goal: p95 <= 200 ms each. Prints p50 / p95 / max per query.

    python bench/bench_worklist.py [--studies 100000] [--repeats 40] [--database-url URL]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

FAMILY = [
    "SMITH",
    "IVANOV",
    "GARCIA",
    "MUELLER",
    "ROSSI",
    "NOVAK",
    "KOWALSKI",
    "JENSEN",
    "PETROV",
    "SILVA",
    "KIM",
    "NGUYEN",
    "OKAFOR",
    "HANSEN",
    "DUBOIS",
    "LEHTO",
]
GIVEN = ["ANNA", "OLGA", "JAN", "MARIA", "PETER", "LUCA", "SOFIA", "IVAN", "EMMA", "NOAH"]
TYPES = ["cxr"] * 45 + ["flg"] * 25 + ["mmg"] * 15 + ["ct-chest"] * 10 + ["ct-brain"] * 5
T0 = datetime(2026, 1, 1)


def fill(db, org_ids: tuple[int, int], n: int, seed: int = 7) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert, select, text

    from radsight.store.tables import ResultRow, StudyRow

    rng = random.Random(seed)
    total = n + n // 10
    batch = 10_000
    t0 = time.perf_counter()
    for start in range(0, total, batch):
        rows = []
        for i in range(start, min(start + batch, total)):
            org = org_ids[0] if i < n else org_ids[1]
            at = T0 + timedelta(seconds=i * 90 * 86400 / total)
            roll = rng.random()
            state, review, score, urgent = "analysed", "", rng.random(), False
            if roll < 0.10:
                state, score = "routed", None
            elif roll < 0.16:
                state, score = "not_analysed", None
            elif roll < 0.26:
                review = "reviewed"
            elif roll < 0.27:
                review = "repeat_requested"
            if score is not None and score > 0.97:
                urgent = True
            family, given = rng.choice(FAMILY), rng.choice(GIVEN)
            rows.append(
                {
                    "organisation_id": org,
                    "study_instance_uid": f"1.2.826.0.1.3680043.10.1.{i}",
                    "study_type": rng.choice(TYPES),
                    "state": state,
                    "state_reason": "wrong body part" if state == "not_analysed" else "",
                    "modality": "DX",
                    "study_date": at.strftime("%Y%m%d"),
                    "num_instances": 1,
                    "first_received_at": at,
                    "last_received_at": at,
                    "ready_at": at,
                    "patient_name": f"{family}^{given}",
                    "patient_name_search": f"{family} {given}",
                    "patient_id": f"PID{i:07d}",
                    "accession_number": f"ACC{i:08d}",
                    "ai_score": score,
                    "urgent": urgent,
                    "review_state": review,
                }
            )
        with db.session() as s:
            s.execute(insert(StudyRow), rows)
    with db.session() as s:
        scored = s.execute(
            select(StudyRow.id, StudyRow.organisation_id, StudyRow.ai_score, StudyRow.urgent).where(
                StudyRow.ai_score.is_not(None)
            )
        ).all()
    for start in range(0, len(scored), batch):
        with db.session() as s:
            s.execute(
                insert(ResultRow),
                [
                    {
                        "organisation_id": org,
                        "study_id": sid,
                        "algorithm_name": "radsight-cxr",
                        "algorithm_version": "1.0.0",
                        "status": "analysed",
                        "study_score": score,
                        "urgent": urgent,
                        "report": {"study_threshold": 0.5},
                        "created_at": T0,
                    }
                    for sid, org, score, urgent in scored[start : start + batch]
                ],
            )
    with db.session() as s:
        # what autovacuum (PostgreSQL) or a periodic ANALYZE does on a running server
        s.execute(text("ANALYZE"))
    print(
        f"inserted {total:,} studies and {len(scored):,} results in "
        f"{time.perf_counter() - t0:.1f} s"
    )


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    fn()  # warm the caches once, as a running server has them
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, times[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from radsight import auth
    from radsight.algorithms.registry import Registry
    from radsight.config import load_settings
    from radsight.pipeline.routing import load_rules
    from radsight.runtime import Runtime
    from radsight.store import tenants
    from radsight.store import worklist as wl
    from radsight.store.scope import Scope
    from radsight.web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-worklist-"))
    settings = load_settings(None, data_dir=tmp, database_url=args.database_url)
    rt = Runtime.open(settings)
    print(f"database: {rt.db.engine.dialect.name}, {args.studies:,} studies in the organisation")
    with rt.db.session() as s:
        a = tenants.create_organisation(s, "Bench Hospital", "North").id
        b = tenants.create_organisation(s, "Other Clinic", "South").id
        user = auth.create_user(s, a, "bench.rad", "bench-password-1", "radiologist")
        cookie, _csrf = auth.create_session(s, user, 3600)
        _row, token = auth.create_token(s, "bench", "radiologist", a, user_id=user.id)
    fill(rt.db, (a, b), args.studies)

    def cursor_after(rows: int) -> str:
        cursor = ""
        with rt.db.session() as s:
            for _ in range(rows // 200):
                page = wl.list_worklist(s, wl.WorklistQuery(Scope.of(a), cursor=cursor, limit=200))
                cursor = page.next_cursor
        return cursor

    deep = cursor_after(50_000)
    week = (T0 + timedelta(days=40), T0 + timedelta(days=47))
    queries: dict[str, dict[str, object]] = {
        "first page": {},
        "deep page (after 50,000)": {"cursor": deep},
        "filter: type + status": {"study_type": "ct-chest", "status": "analysed"},
        "filter: one week": {"received_from": week[0], "received_to": week[1]},
        "search: patient ID": {"search": f"PID{args.studies // 2:07d}"},
        "search: accession": {"search": f"ACC{args.studies // 3:08d}"},
        "search: name prefix (6 %)": {"search": "kowal"},
        "search: full name (0.6 %)": {"search": "kowalski^anna"},
    }
    params = {
        "first page": {},
        "deep page (after 50,000)": {"cursor": deep},
        "filter: type + status": {"study_type": "ct-chest", "status": "analysed"},
        "filter: one week": {
            "received_from": week[0].isoformat(),
            "received_to": week[1].isoformat(),
        },
        "search: patient ID": {"q": f"PID{args.studies // 2:07d}"},
        "search: accession": {"q": f"ACC{args.studies // 3:08d}"},
        "search: name prefix (6 %)": {"q": "kowal"},
        "search: full name (0.6 %)": {"q": "kowalski^anna"},
    }
    html_params = {
        "first page": {},
        "deep page (after 50,000)": {"cursor": deep},
        "filter: type + status": {"study_type": "ct-chest", "status": "analysed"},
        "filter: one week": {"from": week[0].date().isoformat(), "to": week[1].date().isoformat()},
        "search: patient ID": {"q": f"PID{args.studies // 2:07d}"},
        "search: accession": {"q": f"ACC{args.studies // 3:08d}"},
        "search: name prefix (6 %)": {"q": "kowal"},
        "search: full name (0.6 %)": {"q": "kowalski^anna"},
    }
    registry = Registry.from_entry_points()
    app = create_app(rt, registry, load_rules(known_algorithms=registry.refs()))
    api = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    browser = TestClient(app, cookies={"radsight_session": cookie})

    print(
        f"\n{'query':28} {'rows':>5} | {'store p50':>9} {'p95':>7} | {'JSON p50':>9} {'p95':>7}"
        f" | {'HTML p50':>9} {'p95':>7}   (ms, {args.repeats} runs)"
    )
    worst = 0.0
    for name, kw in queries.items():
        q = wl.WorklistQuery(Scope.of(a), limit=50, **kw)  # type: ignore[arg-type]
        with rt.db.session() as s:
            n_rows = len(wl.list_worklist(s, q).studies)

        def store_call(q: wl.WorklistQuery = q) -> object:
            with rt.db.session() as s:
                return wl.list_worklist(s, q)

        sp50, sp95, _ = timed(store_call, args.repeats)

        def json_call(p: dict = params[name]) -> object:  # type: ignore[type-arg]
            r = api.get("/api/worklist", params=p)
            assert r.status_code == 200, r.text
            return r

        def html_call(p: dict = html_params[name]) -> object:  # type: ignore[type-arg]
            r = browser.get("/worklist", params=p)
            assert r.status_code == 200, r.text[:300]
            return r

        jp50, jp95, _ = timed(json_call, args.repeats)
        hp50, hp95, _ = timed(html_call, args.repeats)
        worst = max(worst, sp95, jp95, hp95)
        print(
            f"{name:28} {n_rows:>5} | {sp50:9.1f} {sp95:7.1f} | {jp50:9.1f} {jp95:7.1f}"
            f" | {hp50:9.1f} {hp95:7.1f}"
        )
    print(f"\nworst p95: {worst:.1f} ms (goal <= 200 ms): {'PASS' if worst <= 200 else 'FAIL'}")
    rt.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if worst <= 200 else 1


if __name__ == "__main__":
    sys.exit(main())
