"""Turnaround benchmark: one-image chest studies in at a steady rate, SR + SC out.

``--studies`` (default 100) one-image chest radiograph studies (synthetic DX, CHEST, PA,
``--size`` x ``--size`` 16-bit) are sent to ``radsight serve`` (default workers, routing
rules that send them to ``--algorithm``, by default the deterministic test algorithm
``radsight-bright-region``, as issue 2 asks) at a steady
``--rate`` (default 1 study/s), one dcmtk ``storescu`` association per study. A dcmtk
``storescp`` is the organisation's destination. For each study the turnaround is the time
from the end of its ``storescu`` association (the process has exited) to the moment both
its Structured Report and its Secondary Capture are in ``storescp``'s folder for that study
(the later of the two files' modification times; the folder is polled every 50 ms).

Prints p50, p95 and max, and where the time went (quiet period, queue, analysis, delivery)
from the API's study and job timestamps. Issue 2's goal: p95 <= 5 s on this 2-core machine.

Run: ``python bench/bench_turnaround.py`` (``--studies 10`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pydicom

from radsight.config import DEFAULT_QUIET_PERIODS, Settings
from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import RadsightProcess, Storescp, dcmtk, storescu

CALLING = "BENCHMOD"
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # every SR storage SOP class (PS3.4 B.5)
SC_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, single and multi-frame


@dataclass
class Study:
    index: int
    study_instance_uid: str
    folder: Path
    sent_at: float = 0.0  # storescu exited (time.time())
    send_s: float = 0.0
    rc: int | None = None
    sr_at: float | None = None
    sc_at: float | None = None
    seen: set[str] = field(default_factory=set)

    @property
    def done_at(self) -> float | None:
        if self.sr_at is None or self.sc_at is None:
            return None
        return max(self.sr_at, self.sc_at)

    @property
    def turnaround(self) -> float | None:
        done = self.done_at
        return None if done is None or not self.sent_at else done - self.sent_at


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def generate(root: Path, n: int, size: int) -> list[Study]:
    studies = []
    for i in range(n):
        ds = make_radiograph(
            rows=size,
            columns=size,
            patient_id=f"TURN-{i:04d}",
            seed=i,
            bright_spot=(0.3 + 0.4 * (i % 5) / 4, 0.4, 0.08),
        )
        folder = root / f"study-{i:04d}"
        folder.mkdir(parents=True)
        ds.save_as(folder / "image.dcm", enforce_file_format=True)
        studies.append(Study(i, str(ds.StudyInstanceUID), folder))
    return studies


def poll_destination(scp: Storescp, studies: list[Study], stop: threading.Event) -> None:
    """Note when each study's SR and SC land in storescp's folder (file mtime)."""
    by_uid = {s.study_instance_uid: s for s in studies}
    while not stop.is_set():
        for sub in scp.out_dir.iterdir() if scp.out_dir.exists() else ():
            # --sort-on-study-uid: one sub-folder per study, named <prefix>_<StudyInstanceUID>
            study = by_uid.get(sub.name.split("_", 1)[-1])
            if study is None or study.done_at is not None or not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f.name in study.seen or f.name.startswith("."):
                    continue
                try:
                    ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
                    sop_class = str(ds.SOPClassUID)
                    mtime = f.stat().st_mtime
                except Exception:  # storescp may still be writing it: look again next time
                    continue
                study.seen.add(f.name)
                if sop_class.startswith(SR_PREFIX):
                    study.sr_at = max(study.sr_at or 0.0, mtime)
                elif sop_class.startswith(SC_PREFIX):
                    study.sc_at = max(study.sc_at or 0.0, mtime)
        stop.wait(0.05)


def send(port: int, study: Study) -> None:
    t0 = time.time()
    proc = storescu(port, study.folder, calling=CALLING, timeout=120)
    study.sent_at = time.time()
    study.send_s = study.sent_at - t0
    study.rc = proc.returncode
    if proc.returncode != 0:
        print(f"  study {study.index}: storescu failed ({proc.returncode}): {proc.stderr[-300:]}")


def timestamp(value: str | None) -> float | None:
    """API datetimes are naive UTC."""
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def breakdown(
    server: RadsightProcess, studies: list[Study], algorithms: dict[str, int]
) -> dict[str, list[float]]:
    """Per stage seconds from the API: quiet period, queue, analysis, delivery.

    ``algorithms`` counts the results per "name version status" found on the way.
    """
    parts: dict[str, list[float]] = {
        "received -> routed (quiet period + tick)": [],
        "routed -> analysis started (queue)": [],
        "analysis (claim to finish)": [],
        "analysis done -> delivery started (queue)": [],
        "delivery (claim to finish)": [],
        "SR+SC written minus delivery job finished": [],
    }
    with server.http() as http:
        listed = http.get("/api/studies", params={"limit": 1000}).json()
        ids = {s["study_instance_uid"]: s["id"] for s in listed}
        for st in studies:
            if st.study_instance_uid not in ids or st.done_at is None:
                continue
            d = http.get(f"/api/studies/{ids[st.study_instance_uid]}").json()
            for r in d["results"]:
                key = f"{r['algorithm_name']} {r['algorithm_version']} {r['status']}"
                algorithms[key] = algorithms.get(key, 0) + 1
            analyse = [j for j in d["jobs"] if j["kind"] == "analyse" and j["state"] == "done"]
            deliver = [j for j in d["jobs"] if j["kind"] == "deliver" and j["state"] == "done"]
            routed = timestamp(d["routed_at"])
            received = timestamp(d["last_received_at"])
            if not (analyse and deliver and routed and received):
                continue
            a, v = analyse[0], deliver[0]
            a0, a1 = timestamp(a["started_at"]), timestamp(a["finished_at"])
            v0, v1 = timestamp(v["started_at"]), timestamp(v["finished_at"])
            if None in (a0, a1, v0, v1):
                continue
            parts["received -> routed (quiet period + tick)"].append(routed - received)
            parts["routed -> analysis started (queue)"].append(a0 - routed)  # type: ignore[operator]
            parts["analysis (claim to finish)"].append(a1 - a0)  # type: ignore[operator]
            parts["analysis done -> delivery started (queue)"].append(v0 - a1)  # type: ignore[operator]
            parts["delivery (claim to finish)"].append(v1 - v0)  # type: ignore[operator]
            parts["SR+SC written minus delivery job finished"].append(st.done_at - v1)  # type: ignore[operator]
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1.0, help="studies per second")
    ap.add_argument("--size", type=int, default=2048, help="rows = columns of each radiograph")
    ap.add_argument(
        "--workers", type=int, default=None, help="RADSIGHT_WORKERS (default: radsight's default)"
    )
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait after the last send")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    ap.add_argument(
        "--algorithm",
        default="radsight-bright-region",
        help="algorithm the studies are routed to (generated images: the test algorithm)",
    )
    args = ap.parse_args()
    dcmtk("storescu")
    dcmtk("storescp")

    work = args.keep or Path(tempfile.mkdtemp(prefix="radsight-bench-turnaround-"))
    work.mkdir(parents=True, exist_ok=True)
    quiet_env = os.environ.get("RADSIGHT_QUIET_PERIODS")
    quiet = quiet_env or f"default: cxr {DEFAULT_QUIET_PERIODS['cxr']:g} s"
    print(
        f"radsight turnaround benchmark  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
        f"{platform.machine()}  {os.cpu_count()} CPUs  load {loadavg()}"
    )
    print(
        f"{args.studies} one-image chest studies ({args.size}x{args.size} DX, "
        f"{args.size * args.size * 2 / 2**20:.1f} MiB) at {args.rate:g} study/s; "
        f"quiet period: {quiet}"
    )
    scp = server = None
    try:
        studies = generate(work / "in", args.studies, args.size)
        scp = Storescp(work / "storescp").start()
        env = {"RADSIGHT_QUIET_PERIODS": quiet_env} if quiet_env else {}
        rules = work / "rules.yaml"
        rules.write_text(
            f'version: "bench"\nrules:\n  - name: all\n    match: {{}}\n'
            f"    algorithms: [{args.algorithm}]\n"
        )
        env["RADSIGHT_ROUTING_RULES"] = str(rules)
        # radsight's own default number of workers unless --workers says otherwise
        workers = (
            args.workers if args.workers is not None else Settings.model_fields["workers"].default
        )
        server = RadsightProcess(work / "radsight", workers=workers, env=env)
        server.start()
        server.cli("org", "add", "bench", "--region", "local")
        server.cli("ae", "add", "bench", CALLING)
        server.cli(
            "destination",
            "add",
            "bench",
            "storescp",
            "--ae-title",
            scp.ae_title,
            "--host",
            "127.0.0.1",
            "--port",
            str(scp.port),
        )
        with server.http() as http:
            health = http.get("/health").json()
        print(f"radsight serve with {workers} workers; health: {health}")
        time.sleep(1.5)  # the listener's AE title cache lives for a second

        stop = threading.Event()
        poller = threading.Thread(target=poll_destination, args=(scp, studies, stop), daemon=True)
        poller.start()
        print(f"sending... load {loadavg()}", flush=True)
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for st in studies:
                delay = t0 + st.index / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(send, server.dicom_port, st)
                if st.index % 20 == 19:
                    done = sum(s.done_at is not None for s in studies)
                    print(
                        f"  sent {st.index + 1}, {done} results back, load {loadavg()}", flush=True
                    )
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and any(s.done_at is None for s in studies):
            time.sleep(0.2)
        stop.set()
        poller.join(5)
        print(f"all sent in {time.monotonic() - t0:.1f} s; load at the end {loadavg()}")

        turnarounds = [t for s in studies if (t := s.turnaround) is not None]
        missing = [s for s in studies if s.turnaround is None]
        sends = [s.send_s for s in studies if s.rc == 0]
        print(
            f"\nstorescu association (send) time: p50 {statistics.median(sends):.2f} s, "
            f"max {max(sends):.2f} s"
            if sends
            else "no association succeeded"
        )
        if turnarounds:
            print(
                f"turnaround, end of association -> SR + SC at the destination "
                f"({len(turnarounds)} of {len(studies)} studies):"
            )
            print(
                f"  p50 {percentile(turnarounds, 50):.2f} s   "
                f"p95 {percentile(turnarounds, 95):.2f} s   "
                f"max {max(turnarounds):.2f} s   mean {statistics.mean(turnarounds):.2f} s"
            )
            p95 = percentile(turnarounds, 95)
            print(f"  goal p95 <= 5 s: {'met' if p95 <= 5 and not missing else 'MISSED'}")
            print("where the time went (p50 / p95 / max, from the API's timestamps):")
            algorithms: dict[str, int] = {}
            for stage, values in breakdown(server, studies, algorithms).items():
                if values:
                    print(
                        f"  {stage:44s} {percentile(values, 50):6.2f} "
                        f"{percentile(values, 95):6.2f} {max(values):6.2f} s"
                    )
            print("results: " + ", ".join(f"{n} x {k}" for k, n in sorted(algorithms.items())))
        for s in missing:
            print(
                f"  NO RESULT for study {s.index} ({s.study_instance_uid}): "
                f"rc={s.rc} SR={'yes' if s.sr_at else 'no'} SC={'yes' if s.sc_at else 'no'}"
            )
        log = server.log().splitlines()
        bad = [ln for ln in log if " ERROR " in ln or "Traceback" in ln or " WARNING " in ln]
        print(f"serve log: {len(bad)} warning/error lines" + (f", first: {bad[0]}" if bad else ""))
        return 1 if missing else 0
    finally:
        if server is not None:
            server.stop()
        if scp is not None:
            scp.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
