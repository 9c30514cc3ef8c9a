"""QIDO-RS over 100,000 studies, and a rendered 2,500 x 2,000 DX frame, on ``radsight serve``.

Fills a fresh database with ``--studies`` (default 100,000) study rows of one organisation
(inserted directly with SQLAlchemy, as ingest would index them: patient name and its
search form, patient ID, dates over ten years, accession, modalities) plus 5 % of another
organisation, then starts ``radsight serve`` on it (no workers) and, with a radiologist
token of the first organisation, times ``--repeat`` requests of each kind:

* name, fuzzy: ``/dicomweb/studies?PatientName=<first letters>&fuzzymatching=true&limit=50``
* name, wildcard: ``PatientName=<SURNAME>*``
* date range: ``StudyDate=<one month>``
* patient ID: ``PatientID=<an existing id>``
* listing: ``limit=50&offset=<random, up to the last page>``, OHIF's includefield
* rendered: ``/instances/{uid}/rendered`` of a 2,500 x 2,000 16-bit DX (JPEG, full size),
  and with ``viewport=1024,1024``

"server" is the time the server's request log line reports (handler and response,
no network), "client" the round trip seen by the client on localhost. Goals (issue 3):
QIDO study search p95 <= 200 ms, rendered frame p95 <= 300 ms.

Run: ``python bench/bench_qido.py`` (``--studies 20000 --repeat 20`` for a quick look;
``--database-url postgresql+psycopg://...`` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, text

from radsight.config import load_settings
from radsight.dicom.instances import name_for_search
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.tables import StudyRow
from radsight.testing.peers import RadsightProcess

SURNAMES = [
    "SMITH", "JONES", "IVANOV", "PETROV", "SIDOROV", "KUZNETSOV", "POPOV", "SOKOLOV",
    "LEBEDEV", "KOZLOV", "NOVIKOV", "MOROZOV", "VOLKOV", "SOLOVYOV", "VASILYEV", "ZAITSEV",
    "PAVLOV", "SEMYONOV", "GOLUBEV", "VINOGRADOV", "BOGDANOV", "VOROBYOV", "FYODOROV",
    "MIKHAILOV", "BELYAEV", "TARASOV", "BELOV", "KOMAROV", "ORLOV", "KISELYOV", "MAKAROV",
    "ANDREEV", "KOVALYOV", "ILYIN", "GUSEV", "TITOV", "KUZMIN", "KUDRYAVTSEV", "BARANOV",
    "KULIKOV", "ALEKSEEV", "STEPANOV", "YAKOVLEV", "SOROKIN", "SERGEEV", "ROMANOV",
    "ZAKHAROV", "BORISOV", "KOROLYOV", "GERASIMOV", "PONOMARYOV", "GRIGORYEV", "LAZAREV",
    "MEDVEDEV", "ERSHOV", "NIKITIN", "SOBOLEV", "RYABOV", "POLYAKOV", "TSVETKOV", "DANILOV",
    "ZHUKOV", "FROLOV", "ZHURAVLYOV", "NIKOLAEV", "KRYLOV", "MAKSIMOV", "SIDORENKO",
    "OSIPOV", "BELOUSOV", "FEDOTOV", "DOROFEEV", "EGOROV", "MATVEEV", "BOBROV", "DMITRIEV",
    "KALININ", "ANISIMOV", "PETUKHOV", "ANTONOV", "TIMOFEEV", "NIKIFOROV", "VESELOV",
    "FILIPPOV", "MARKOV", "BOLSHAKOV", "SUKHANOV", "MIRONOV", "SHIRYAEV", "ALEKSANDROV",
    "KONOVALOV", "SHESTAKOV", "KAZAKOV", "EFIMOV", "DENISOV", "GROMOV", "FOMIN", "DAVYDOV",
]  # fmt: skip
GIVEN = "ANNA IVAN MARIA OLGA PYOTR ELENA SERGEI TATIANA ALEXEI NATALIA DMITRI IRINA".split()
GIVEN += "JOHN MARY PAUL SARAH NIKOLAI VERA".split()
MODALITIES = ["DX", "DX", "DX", "CR", "MG", "CT", "CT\\SR", "DX\\SR"]
OHIF_INCLUDE = "00081030,00080060,00080090,00100030"


def fill(rt: Runtime, n: int, seed: int = 7) -> tuple[int, list[str]]:
    """``n`` studies of organisation 1 and ``n // 20`` of organisation 2; their patient IDs."""
    rng = random.Random(seed)
    with rt.db.session() as s:
        org = tenants.create_organisation(s, "Bench Hospital", "North").id
        other = tenants.create_organisation(s, "Other Hospital", "South").id
    start = date(2016, 1, 1)
    now = utcnow()
    ids: list[str] = []
    batch: list[dict] = []
    for i in range(n + n // 20):
        name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}"
        day = start + timedelta(days=rng.randrange(3650))
        pid = f"P{i:08d}"
        if i < n and i % 997 == 0:
            ids.append(pid)
        modalities = rng.choice(MODALITIES)
        batch.append(
            dict(
                organisation_id=org if i < n else other,
                study_instance_uid=f"1.2.826.0.1.3680043.8.498.9{i:012d}",
                study_type="cxr",
                # finished studies: the assembler has nothing to route in them
                state=rng.choice(["analysed", "analysed", "analysed", "not_analysed"]),
                routed_at=now,
                state_reason="",
                modality=modalities.split("\\")[0],
                study_date=day.strftime("%Y%m%d"),
                study_description="Chest PA",
                num_instances=rng.randint(1, 4),
                first_received_at=now,
                last_received_at=now,
                ready_at=now,
                rules_version="bench",
                patient_name=name,
                patient_name_search=name_for_search(name),
                patient_id=pid,
                patient_birth_date="19600101",
                patient_sex=rng.choice("MF"),
                accession_number=f"A{i:09d}",
                dicom_study_id="1",
                study_time="101500",
                referring_physician_name="",
                modalities_in_study=modalities,
                num_series=modalities.count("\\") + 1,
                ai_score=rng.random(),
                urgent=rng.random() < 0.02,
                review_state="",
            )
        )
        if len(batch) == 10_000:
            with rt.db.session() as s:
                s.execute(insert(StudyRow), batch)
            batch = []
    if batch:
        with rt.db.session() as s:
            s.execute(insert(StudyRow), batch)
    if rt.db.engine.dialect.name == "postgresql":
        # what autovacuum does to a table after a bulk load: statistics, visibility map
        with rt.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE studies"))
    return org, ids


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


_LINE = re.compile(r"GET (\S+) -> (\d+) in ([\d.]+) ms")


def server_times(log: str, since: int, path_prefix: str) -> list[float]:
    return [
        float(m.group(3))
        for m in _LINE.finditer(log[since:])
        if m.group(1).startswith(path_prefix) and m.group(2) == "200"
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="radsight-bench-qido-"))
    data = work / "radsight"
    settings = load_settings(None, data_dir=data, database_url=args.database_url or None)
    rt = Runtime.open(settings)
    t0 = time.perf_counter()
    org, patient_ids = fill(rt, args.studies)
    fill_s = time.perf_counter() - t0
    dx = make_radiograph(rows=2500, columns=2000, bits_stored=14, patient_id="P-RENDER")
    buf = io.BytesIO()
    dx.save_as(buf, enforce_file_format=True)
    accept_instance(rt, buf.getvalue(), organisation_id=org)
    rt.close()
    print(f"filled {args.studies:,} + {args.studies // 20:,} studies in {fill_s:.1f} s ({data})")

    rules = work / "rules.yaml"
    rules.write_text(
        'version: "bench"\nrules:\n  - name: all\n    match: {}\n'
        "    algorithms: [radsight-bright-region]\n"
    )
    env = {"RADSIGHT_ROUTING_RULES": str(rules), "RADSIGHT_LOG_LEVEL": "INFO"}
    if args.database_url:
        env["RADSIGHT_DATABASE_URL"] = args.database_url
    server = RadsightProcess(data, workers=0, env=env).start()
    try:
        token = server.make_token("radiologist", "--org", "Bench Hospital", name="bench")
        rng = random.Random(11)
        http = httpx.Client(
            base_url=server.url + "/dicomweb",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
            timeout=60,
        )
        month = lambda: f"{rng.randrange(2016, 2026)}{rng.randrange(1, 13):02d}"  # noqa: E731
        kinds = {
            "name, fuzzy": lambda: {
                "PatientName": rng.choice(SURNAMES)[:4].lower(),
                "fuzzymatching": "true",
                "limit": 50,
            },
            "name, wildcard": lambda: {"PatientName": rng.choice(SURNAMES) + "*", "limit": 50},
            "date range (a month)": lambda: {
                "StudyDate": (m := month()) + "01-" + m + "28",
                "limit": 50,
            },
            "patient ID": lambda: {"PatientID": rng.choice(patient_ids)},
            "listing, limit/offset": lambda: {
                "limit": 50,
                "offset": rng.randrange(0, max(1, args.studies - 50)),
                "includefield": OHIF_INCLUDE,
            },
        }
        rows = []
        for label, params in kinds.items():
            for _ in range(3):  # warm-up
                http.get("/studies", params=params()).raise_for_status()
            mark = len(server.log())
            client_ms, matched = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = http.get("/studies", params=params())
                client_ms.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                matched.append(len(r.json()))
            time.sleep(0.3)  # let the log line land
            srv = server_times(server.log(), mark, "/dicomweb/studies")
            rows.append((label, srv, client_ms, statistics.mean(matched), 200))
        base = (
            f"/studies/{dx.StudyInstanceUID}/series/{dx.SeriesInstanceUID}"
            f"/instances/{dx.SOPInstanceUID}/rendered"
        )
        for label, params in (
            ("rendered 2500x2000 JPEG", {}),
            ("rendered, viewport 1024", {"viewport": "1024,1024"}),
        ):
            http.get(base, params=params, headers={"Accept": "image/jpeg"}).raise_for_status()
            mark = len(server.log())
            client_ms = []
            for _ in range(max(10, args.repeat // 2)):
                t = time.perf_counter()
                r = http.get(base, params=params, headers={"Accept": "image/jpeg"})
                client_ms.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            time.sleep(0.3)
            srv = server_times(server.log(), mark, "/dicomweb/studies")
            rows.append((label, srv, client_ms, len(r.content) / 1024, 300))
    finally:
        server.stop()

    print(
        f"\n{platform.node()}: {platform.processor() or platform.machine()}, "
        f"Python {sys.version.split()[0]}, "
        f"database {'PostgreSQL' if args.database_url else 'SQLite'}"
    )
    print(
        f"{'request':<26} {'server p50':>10} {'server p95':>10} {'client p95':>10} "
        f"{'goal':>6}  {'n':>4}  result"
    )
    worst = True
    for label, srv, client_ms, size, goal in rows:
        server_p95 = p95(srv) if srv else float("nan")
        ok = server_p95 <= goal
        worst &= ok
        unit = "KiB" if label.startswith("rendered") else "matches"
        print(
            f"{label:<26} {statistics.median(srv) if srv else float('nan'):>8.1f}ms "
            f"{server_p95:>8.1f}ms {p95(client_ms):>8.1f}ms {goal:>4}ms  {len(srv):>4}  "
            f"{size:.0f} {unit} {'ok' if ok else 'OVER GOAL'}"
        )
    return 0 if worst else 1


if __name__ == "__main__":
    sys.exit(main())
