"""Gateway scaling: analysed chest studies per second with 1 gateway receiving vs 2.

The scaled-out set-up of docs/scale-out.md, on this machine: ``radsight serve --no-workers``
gateways on one PostgreSQL database, one RabbitMQ virtual host and one shared object store
(a directory, or ``--store s3`` for an S3-compatible server: moto's, in this process), and
the same Celery workers in both runs (``radsight worker --concurrency 2``, the default).

``--studies`` one-image chest studies (real adult chest radiographs from ../shared/data
when present, routed to ``radsight-cxr``; otherwise generated ones and the test algorithm)
are sent by ``--senders`` dcmtk ``storescu`` streams at once, one association per study, as
modalities do. With 2 gateways, the senders alternate between them (what a TCP load
balancer in front of them does); the offered load is the same in both runs.

Figures per run:

* received: studies / (last association ended - first one started);
* analysed: studies / (last analysis job finished - first association started), from the
  job rows: the end-to-end rate, quiet period included once;
* the ratio of each, 2 gateways / 1 gateway, measured in the same run of the script.

Run: ``python bench/bench_gateways.py`` (``--studies 40`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_workers import loadavg, pg_database, rabbit_vhost, write_studies

from radsight.testing.peers import RadsightProcess, S3Server, storescu


def send(gateways: list[RadsightProcess], files: list[Path], senders: int) -> float:
    """Send every file in its own association, ``senders`` at once; return the seconds."""
    todo: queue.Queue[Path] = queue.Queue()
    for f in files:
        todo.put(f)
    failures: list[str] = []

    def sender(i: int) -> None:
        gw = gateways[i % len(gateways)]
        while True:
            try:
                f = todo.get_nowait()
            except queue.Empty:
                return
            res = storescu(gw.dicom_port, [f], calling="MODALITY1")
            if res.returncode != 0:
                failures.append(f"{f.name}: {res.stderr.strip()[-200:]}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} studies were not accepted: {failures[:3]}")
    return time.monotonic() - t0


def wait_analysed(gw: RadsightProcess, n: int) -> list[dict]:
    """The analysis jobs once there are ``n`` and all have ended."""
    deadline = time.monotonic() + 120 + n * 5
    while time.monotonic() < deadline:
        with gw.http() as http:
            jobs = http.get("/api/jobs", params={"kind": "analyse", "limit": 1000}).json()
        if len(jobs) == n and all(j["state"] in ("done", "failed", "dead") for j in jobs):
            return list(jobs)
        time.sleep(0.5)
    raise SystemExit(f"not all {n} studies were analysed in time")


def run(
    work: Path, args: argparse.Namespace, files: list[Path], algorithm: str, g: int
) -> dict[str, float]:
    k = args.concurrency
    warm_up, files = files[:k], files[k:]
    n = len(files)
    rules = work / "rules.yaml"
    rules.write_text(
        f'version: "bench"\nrules:\n  - name: all\n    match: {{}}\n    algorithms: [{algorithm}]\n'
    )
    vhost, database = rabbit_vhost(), pg_database()
    env = {
        "RADSIGHT_ROUTING_RULES": str(rules),
        "RADSIGHT_QUIET_PERIODS": '{"cxr": 0.5}',
        "RADSIGHT_LOG_LEVEL": "WARNING",
        "RADSIGHT_JOB_RUNNER": "celery",
        "RADSIGHT_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "RADSIGHT_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
    }
    s3 = None
    if args.store == "s3":
        s3 = S3Server(bucket="radsight-bench").start()
        env |= s3.env(prefix=f"run-{g}")
    else:
        env["RADSIGHT_OBJECT_STORE"] = str(work / f"objects-{g}")
    gateways = [
        RadsightProcess(work / f"g{g}-gateway{i + 1}", workers=0, env=env) for i in range(g)
    ]
    try:
        gateways[0].cli("org", "add", "bench", "--region", "local")
        gateways[0].cli("ae", "add", "bench", "MODALITY1")
        for gw in gateways:
            gw.start()
        gateways[0].start_worker(concurrency=args.concurrency)
        # a warm-up study per worker process: the worker is up and its model loaded
        # before the clock starts
        send(gateways[:1], warm_up, k)
        warm = {j["id"] for j in wait_analysed(gateways[0], k)}
        start = datetime.now(UTC).replace(tzinfo=None)
        sent_s = send(gateways, files, args.senders)
        jobs = [j for j in wait_analysed(gateways[-1], n + k) if j["id"] not in warm]
        with gateways[0].http() as http:
            results = http.get("/api/results", params={"limit": 1000}).json()
        analysed = sum(r["status"] == "analysed" for r in results) - k
        first = min(datetime.fromisoformat(j["started_at"]) for j in jobs)
        end = max(datetime.fromisoformat(j["finished_at"]) for j in jobs)
        seconds = (end - start).total_seconds()
        busy = (end - first).total_seconds()
        logs = "".join(gw.log() for gw in gateways)
        problems = sum(" ERROR " in line or "Traceback" in line for line in logs.splitlines())
        print(
            f"  {g} gateway(s): received {n} studies in {sent_s:.1f} s = {n / sent_s:.2f}/s; "
            f"{analysed} analysed: last one {seconds:.1f} s after the first association = "
            f"{n / seconds:.2f} studies/s end to end, {n / busy:.2f}/s from the first "
            f"analysis  (load {loadavg()}; {problems} error lines in the gateway logs)"
        )
        return {"received": n / sent_s, "analysed": n / seconds, "analysis": n / busy}
    finally:
        for gw in gateways:
            gw.stop()
        if s3 is not None:
            s3.stop()
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=120)
    ap.add_argument("--senders", type=int, default=4, help="storescu streams at once")
    ap.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    ap.add_argument("--store", choices=["directory", "s3"], default="directory")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (logs)")
    args = ap.parse_args()
    if not 1 <= args.studies + args.concurrency <= 1000:
        ap.error("--studies + --concurrency: at most 1000 (one API page of jobs)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="radsight-bench-gateways-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"radsight gateway scaling  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
            f"{platform.machine()}  {os.cpu_count()} CPUs  load {loadavg()}  "
            f"store {args.store}, {args.senders} senders, worker --concurrency "
            f"{args.concurrency}"
        )
        # + one warm-up study per worker process
        algorithm = write_studies(work / "in", args.studies + args.concurrency)
        files = sorted((work / "in").glob("*.dcm"))
        print(f"{args.studies} one-image chest studies -> {algorithm}")
        one = run(work, args, files, algorithm, 1)
        two = run(work, args, files, algorithm, 2)
        for what, label in [
            ("received", "studies received/s"),
            ("analysed", "studies analysed/s, end to end"),
            ("analysis", "studies analysed/s, from the first analysis"),
        ]:
            print(f"ratio 2 gateways / 1 gateway, {label}: {two[what] / one[what]:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
