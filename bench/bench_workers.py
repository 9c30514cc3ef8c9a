"""Worker scaling: analysed chest studies per second with 1 worker process vs 2.

``--studies`` one-image chest radiograph studies are imported into a fresh data directory
and analysed by ``radsight serve`` with 1, then 2 worker processes (``--runner embedded``,
the default) or by ``radsight worker --concurrency 1`` then ``2`` (``--runner celery``,
on PostgreSQL and a RabbitMQ virtual host of its own). The images are real adult chest
radiographs from ../shared/data (COVID-QU-Ex test split) when present, routed to the
built-in model ``radsight-cxr``; otherwise generated ones routed to the test algorithm.

Throughput = studies / (last analysis job finished - first analysis job started), from
the job rows, so start-up and the quiet period are not counted. Issue 5's goal: >= 1.7x
from 1 to 2 workers on this 2-core machine.

Run: ``python bench/bench_workers.py`` (``--studies 40`` for a quick look).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import RadsightProcess

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_studies(folder: Path, n: int) -> str:
    """n one-image studies; returns the algorithm they should be routed to."""
    folder.mkdir(parents=True)
    labels = SHARED / "cxr" / "covid-qu-ex-adult" / "labels.csv"
    pngs: list[Path] = []
    if labels.exists():
        with open(labels) as fh:
            pngs = [
                labels.parent / r["file"]
                for r in csv.DictReader(fh)
                if r["official_split"] == "Test"
            ]
    for i in range(n):
        if pngs:
            pixels = np.asarray(Image.open(pngs[i % len(pngs)]).convert("L"), np.float32)
            values = np.round(pixels / 255 * 4095).astype(np.uint16)
            ds = make_radiograph(rows=values.shape[0], columns=values.shape[1], seed=i)
            ds.PixelData = values.tobytes()
        else:
            ds = make_radiograph(seed=i, bright_spot=(0.7, 0.4, 0.12))
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
    return "radsight-cxr" if pngs else "radsight-bright-region"


def rabbit_vhost() -> str:
    vhost = f"radsight-bench-{uuid.uuid4().hex[:8]}"
    for args in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)
    return vhost


def pg_database() -> str:
    import psycopg

    name = f"radsight_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def run(work: Path, studies_dir: Path, algorithm: str, n: int, k: int, runner: str) -> float:
    rules = work / "rules.yaml"
    rules.write_text(
        f'version: "bench"\nrules:\n  - name: all\n    match: {{}}\n    algorithms: [{algorithm}]\n'
    )
    env = {
        "RADSIGHT_ROUTING_RULES": str(rules),
        "RADSIGHT_QUIET_PERIODS": '{"cxr": 0.5}',
        "RADSIGHT_LOG_LEVEL": "WARNING",
    }
    vhost = database = ""
    if runner == "celery":
        vhost, database = rabbit_vhost(), pg_database()
        env |= {
            "RADSIGHT_JOB_RUNNER": "celery",
            "RADSIGHT_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            "RADSIGHT_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
        }
    server = RadsightProcess(
        work / f"radsight-{k}", workers=k if runner == "embedded" else 0, env=env
    )
    server.cli("org", "add", "bench", "--region", "local")
    res = server.cli("import", str(studies_dir), "--org", "bench")
    print(f"  imported: {res.stdout.strip().splitlines()[0]}")
    server.start()
    if runner == "celery":
        server.start_worker(concurrency=k)
    try:
        deadline = time.monotonic() + 60 + n * 5
        while time.monotonic() < deadline:
            with server.http() as http:
                jobs = http.get("/api/jobs", params={"kind": "analyse", "limit": 1000}).json()
            if len(jobs) == n and all(j["state"] in ("done", "failed", "dead") for j in jobs):
                break
            time.sleep(1)
        else:
            raise SystemExit(f"not all {n} studies were analysed in time")
        with server.http() as http:
            results = http.get("/api/results", params={"limit": 1000}).json()
        analysed = sum(r["status"] == "analysed" for r in results)
        start = min(datetime.fromisoformat(j["started_at"]) for j in jobs)
        end = max(datetime.fromisoformat(j["finished_at"]) for j in jobs)
        seconds = (end - start).total_seconds()
        print(
            f"  {k} worker(s): {n} studies ({analysed} analysed, {n - analysed} not) in "
            f"{seconds:.1f} s = {n / seconds:.2f} studies/s  (load {loadavg()})"
        )
        return n / seconds
    finally:
        server.stop()
        if vhost:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
        if database:
            import psycopg

            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
            ) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=120)
    ap.add_argument("--runner", choices=["embedded", "celery"], default="embedded")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="radsight-bench-workers-"))
    try:
        print(
            f"radsight worker scaling  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
            f"{platform.machine()}  {os.cpu_count()} CPUs  load {loadavg()}  "
            f"runner {args.runner}"
        )
        algorithm = write_studies(work / "in", args.studies)
        print(f"{args.studies} one-image chest studies -> {algorithm}")
        one = run(work, work / "in", algorithm, args.studies, 1, args.runner)
        two = run(work, work / "in", algorithm, args.studies, 2, args.runner)
        ratio = two / one
        verdict = "meets" if ratio >= 1.7 else "MISSES"
        print(f"ratio 2 workers / 1 worker: {ratio:.2f}x  ({verdict} the goal of >= 1.7x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
