"""Sign-in flood benchmark: does a password-guessing flood slow the API for everyone else?

Issue 16 (finding 5): a 16-thread wrong-password flood took ``/api/studies`` from 13 ms to
1.7 s median, because argon2 ran on the request path with nothing bounding it. This script
starts ``radsight serve`` (``RADSIGHT_WORKERS=0``) on a free loopback port and measures the
latency of ``GET /api/studies`` (a radiologist's token, sequential requests) for
``--seconds`` (default 15) or ``--requests`` (default 200), whichever ends first:

* **quiet**: nobody signs in;
* **flood, one address**: ``--threads`` (default 16) threads post wrong passwords for an
  existing user from 127.0.0.1, with the default ``signin_*`` settings: the account locks
  after 5 failures and the address is answered 429 without hashing after 20;
* **flood, no throttle, gate 2**: the same flood with the throttle out of the way
  (per-account and per-address limits set to 10^6, what a flood from many addresses against
  many accounts costs) and the default ``password_hash_concurrency`` of 2;
* **peer: flood, no throttle, gate 40** (named peer, the code before issue 16): the same
  with ``password_hash_concurrency=40``, i.e. every request thread may hash at once, as
  before.

Prints median and p95 per case, the flood's answers (status counts, sign-ins/s) and the
ratios to the quiet case and to the peer. A flood thread's POSTs are sequential (keep-alive).

Run: ``python bench/bench_signin.py`` (~2 min; ``--seconds 5`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from radsight.testing.peers import RadsightProcess

PASSWORD = "correct horse battery"
UNTHROTTLED = {
    "RADSIGHT_SIGNIN_MAX_FAILURES_PER_ACCOUNT": "1000000",
    "RADSIGHT_SIGNIN_MAX_FAILURES_PER_ADDRESS": "1000000",
}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def flood(url: str, stop: threading.Event, answers: Counter) -> None:
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as web:
        token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/signin").text)[1]  # type: ignore[index]
        n = 0
        while not stop.is_set():
            n += 1
            r = web.post("/signin", data={"username": "dr.flood", "password": f"guess {n}",
                                          "csrf_token": token})  # fmt: skip
            answers[r.status_code] += 1
            found = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
            if found:
                token = found[1]


def measure(url: str, token: str, seconds: float, requests: int) -> list[float]:
    took: list[float] = []
    with httpx.Client(base_url=url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as api:  # fmt: skip
        api.get("/api/studies").raise_for_status()  # warm
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(took) < requests:
            t0 = time.perf_counter()
            api.get("/api/studies").raise_for_status()
            took.append(time.perf_counter() - t0)
    return took


def run_case(folder: Path, name: str, env: dict[str, str], threads: int, args) -> dict:  # type: ignore[no-untyped-def]
    server = RadsightProcess(folder / name.replace(" ", "-").replace(",", ""), workers=0,
                             env={**env, "RADSIGHT_LOG_LEVEL": "WARNING"})  # fmt: skip
    server.cli("org", "add", "Bench Hospital", "--region", "North")
    for user in ("dr.flood", "dr.reader"):
        subprocess.run(
            [sys.executable, "-m", "radsight.cli.main", "user", "add", user, "--org",
             "Bench Hospital", "--role", "radiologist", "--password-stdin"],
            env=server.env(), input=PASSWORD + "\n", text=True, check=True,
            capture_output=True, timeout=120,
        )  # fmt: skip
    token = server.make_token("radiologist", "--user", "dr.reader")
    server.start()
    try:
        stop, answers = threading.Event(), Counter()
        workers = [threading.Thread(target=flood, args=(server.url, stop, answers))
                   for _ in range(threads)]  # fmt: skip
        for w in workers:
            w.start()
        if threads:
            time.sleep(2.0)  # let the flood fill the queue
        t0 = time.monotonic()
        took = measure(server.url, token, args.seconds, args.requests)
        elapsed = time.monotonic() - t0
        stop.set()
        for w in workers:
            w.join(60)
    finally:
        server.stop()
    return {
        "name": name,
        "n": len(took),
        "median": statistics.median(took),
        "p95": percentile(took, 95),
        "answers": dict(sorted(answers.items())),
        "signins_per_s": sum(answers.values()) / max(elapsed + 2.0 * bool(threads), 1e-9),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (logs)")
    args = p.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load {loadavg()}")  # fmt: skip
    cases = [
        ("quiet", {}, 0),
        ("flood, one address", {}, args.threads),
        ("flood, no throttle, gate 2", UNTHROTTLED, args.threads),
        ("peer: flood, no throttle, gate 40",
         {**UNTHROTTLED, "RADSIGHT_PASSWORD_HASH_CONCURRENCY": "40"}, args.threads),
    ]  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="radsight-bench-signin-") as tmp:
        folder = args.keep or Path(tmp)
        for name, env, threads in cases:
            results.append(run_case(folder, name, env, threads, args))
            print(f"  measured {name} (load {loadavg()})", flush=True)
    print(f"\nGET /api/studies latency, {args.threads} flood threads where flooding")
    print(
        f"{'case':36} {'requests':>8} {'median ms':>10} {'p95 ms':>8} {'sign-ins/s':>11}  answers"
    )
    for r in results:
        print(f"{r['name']:36} {r['n']:>8} {r['median'] * 1000:>10.1f} {r['p95'] * 1000:>8.1f} "
              f"{r['signins_per_s']:>11.1f}  {r['answers']}")  # fmt: skip
    quiet, peer = results[0], results[-1]
    for r in results[1:]:
        print(f"ratio {r['name']} / quiet, median: {r['median'] / quiet['median']:.1f}x, "
              f"p95: {r['p95'] / quiet['p95']:.1f}x")  # fmt: skip
    for r in results[1:-1]:
        print(f"ratio peer (gate 40) / {r['name']}, median: {peer['median'] / r['median']:.1f}x")
    print(f"load at the end {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
