"""Ingest benchmark: dcmtk ``storescu`` into Radsight and into Orthanc, same machine, same run.

Generates two sets of synthetic DX radiographs (each instance its own SOP Instance UID,
several instances per study):

* small: ``--small`` instances (default 1,000) of 512x512 16-bit, ~0.5 MiB each;
* large: ``--large`` instances (default 200) of 2048x2048 16-bit, ~8 MiB each;

then sends each set in ONE ``storescu`` association, with the same options, to

(a) ``radsight serve`` (RADSIGHT_WORKERS=0 so only ingest is measured; durable
    acknowledgement on: the file is fsynced and its row committed before each C-STORE
    response), and
(b) Orthanc (the Debian package, default settings apart from ports and storage folder).

The figure is the wall time of the ``storescu`` process. Afterwards it checks that every
instance was stored (Radsight: the API's per-study instance counts; Orthanc:
``/statistics``) and prints instances/s, MiB/s and the ratio Radsight / Orthanc.

Issue 2's goal: Radsight >= 3x Orthanc's instances/s on the small set, >= 1.5x on the large.

Run: ``python bench/bench_ingest.py`` (``--small 200 --large 40`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from radsight.dicom.synthetic import make_radiograph
from radsight.dicom.uids import PREFIX
from radsight.testing.peers import Orthanc, RadsightProcess, dcmtk, storescu

CALLING = "BENCHSCU"
SETS = {"small": 512, "large": 2048}  # matrix size of each set
MIB = 1024 * 1024


@dataclass
class Run:
    peer: str
    dataset: str
    instances: int
    mib: float
    seconds: float
    stored: int
    load: str
    note: str = ""

    @property
    def per_s(self) -> float:
        return self.instances / self.seconds

    @property
    def mib_per_s(self) -> float:
        return self.mib / self.seconds


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def generate(folder: Path, count: int, size: int, per_study: int) -> float:
    """Write ``count`` DX instances of size x size into ``folder``; return total MiB."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    made = 0
    study = 0
    while made < count:
        study_uid = generate_uid(prefix=PREFIX)
        series_uid = generate_uid(prefix=PREFIX)
        # pixels made once per study (the costly part); every instance gets its own UIDs
        ds = make_radiograph(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            patient_id=f"BENCH-{size}-{study:04d}",
            rows=size,
            columns=size,
            seed=study,
        )
        for n in range(min(per_study, count - made)):
            ds.SOPInstanceUID = generate_uid(prefix=PREFIX)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = n + 1
            path = folder / f"{made:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            total += path.stat().st_size
            made += 1
        study += 1
    return total / MIB


def send(port: int, folder: Path, called: str, pdu: int | None) -> float:
    """One storescu association with every file in ``folder``; return its wall time."""
    extra: list[str] = []
    if pdu:
        extra += ["--max-pdu", str(pdu)]
    t0 = time.perf_counter()
    proc = storescu(port, folder, calling=CALLING, called=called, extra=extra, timeout=3600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"storescu to {called} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    bad = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "W:" in ln or "E:" in ln]
    if bad:
        print(f"  storescu to {called} reported:\n    " + "\n    ".join(bad[:10]))
    return seconds


def radsight_count(server: RadsightProcess) -> int:
    total = 0
    offset = 0
    with server.http() as http:
        while True:
            page = http.get("/api/studies", params={"limit": 1000, "offset": offset}).json()
            total += sum(s["num_instances"] for s in page)
            if len(page) < 1000:
                return total
            offset += 1000


def run_radsight(
    work: Path, name: str, folder: Path, n: int, mib: float, pdu: int | None, *, fsync: bool
) -> Run:
    env = {} if fsync else {"RADSIGHT_UNSAFE_NO_FSYNC": "true"}
    server = RadsightProcess(work / name, workers=0, env=env)
    server.start()
    try:
        server.cli("org", "add", "bench", "--region", "local")
        server.cli("ae", "add", "bench", CALLING)
        time.sleep(1.2)  # the listener's AE title cache lives for a second
        subprocess.run(["sync"], check=True)
        load = loadavg()
        seconds = send(server.dicom_port, folder, "RADSIGHT", pdu)
        stored = radsight_count(server)
        on_disk = sum(1 for _ in (server.data_dir / "objects" / "instances").rglob("*.dcm"))
        if on_disk != stored:
            print(f"  radsight: {stored} instances indexed but {on_disk} files on disk")
        log = server.log().splitlines()
        errors = [ln for ln in log if " ERROR " in ln or "Traceback" in ln or "WARNING" in ln]
        if errors:
            print(f"  radsight serve log has {len(errors)} warning/error lines, first: {errors[0]}")
        summary = [ln for ln in log if "association from" in ln]
        note = f"serve log: {summary[-1].split(': ', 1)[-1]}" if summary else ""
    finally:
        server.stop()
    return Run(
        "radsight" + ("" if fsync else "-nofsync"), name, n, mib, seconds, stored, load, note
    )


def run_orthanc(
    work: Path,
    name: str,
    folder: Path,
    n: int,
    mib: float,
    pdu: int | None,
    config: dict[str, object],
) -> Run:
    peer = Orthanc(work / name, **config)
    peer.start()
    try:
        subprocess.run(["sync"], check=True)
        load = loadavg()
        seconds = send(peer.dicom_port, folder, "ORTHANC", pdu)
        stored = int(peer.get("/statistics")["CountInstances"])  # type: ignore[index]
    finally:
        peer.stop()
    return Run("orthanc", name, n, mib, seconds, stored, load)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=1000, help="instances of 512x512 (0.5 MiB)")
    ap.add_argument("--large", type=int, default=200, help="instances of 2048x2048 (8 MiB)")
    ap.add_argument("--per-study", type=int, default=4, help="instances per study")
    ap.add_argument(
        "--max-pdu",
        type=int,
        default=None,
        help="storescu --max-pdu (receive PDU size it proposes; same for both)",
    )
    ap.add_argument(
        "--also-nofsync",
        action="store_true",
        help="also measure Radsight with RADSIGHT_UNSAFE_NO_FSYNC (for reference)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per peer and set, alternating peers; the median is compared",
    )
    ap.add_argument(
        "--orthanc-set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override an Orthanc setting (not the default any more), e.g. "
        "MaximumPduLength=131072; repeatable",
    )
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()
    orthanc_config = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.orthanc_set)}
    dcmtk("storescu")  # raises with the install hint when dcmtk is missing
    if not (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists()):
        sys.exit("Orthanc is not installed (apt-get install orthanc)")

    work = args.keep or Path(tempfile.mkdtemp(prefix="radsight-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"radsight ingest benchmark  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
        f"{platform.machine()}  {os.cpu_count()} CPUs  load {loadavg()}"
    )
    print(
        f"work folder {work}  storescu options: one association, "
        f"{'--max-pdu ' + str(args.max_pdu) if args.max_pdu else 'default PDU'}; Orthanc: "
        f"{orthanc_config or 'Debian package defaults'}"
    )
    peers = ["radsight", "orthanc"] + (["radsight-nofsync"] if args.also_nofsync else [])
    runs: list[Run] = []
    try:
        for name, count in (("small", args.small), ("large", args.large)):
            if count <= 0:
                continue
            folder = work / f"in-{name}"
            t0 = time.perf_counter()
            mib = generate(folder, count, SETS[name], args.per_study)
            print(
                f"generated {count} {name} instances ({mib:.0f} MiB, "
                f"{mib / count:.2f} MiB each) in {time.perf_counter() - t0:.0f} s"
            )
            for rep in range(args.repeat):
                for peer in peers:
                    tag = f"{name}-{peer}-{rep}"
                    if peer == "orthanc":
                        r = run_orthanc(work, tag, folder, count, mib, args.max_pdu, orthanc_config)
                    else:
                        r = run_radsight(
                            work, tag, folder, count, mib, args.max_pdu, fsync=peer == "radsight"
                        )
                    r.dataset = name
                    runs.append(r)
                    ok = "all stored" if r.stored == r.instances else f"ONLY {r.stored} STORED"
                    print(
                        f"  {r.peer:16s} {name:5s}: {r.instances} in {r.seconds:7.2f} s = "
                        f"{r.per_s:7.1f} inst/s {r.mib_per_s:7.1f} MiB/s  ({ok}; "
                        f"load before {r.load})",
                        flush=True,
                    )
                    if r.note:
                        print(f"    {r.note}")
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'set':6s} {'peer':16s} {'instances':>9s} {'runs':>4s} {'seconds':>8s} "
        f"{'inst/s':>8s} {'MiB/s':>8s} {'stored':>7s}"
    )
    median: dict[tuple[str, str], Run] = {}
    for name in ("small", "large"):
        for peer in peers:
            mine = sorted(
                (r for r in runs if r.dataset == name and r.peer == peer), key=lambda r: r.seconds
            )
            if not mine:
                continue
            r = median[name, peer] = mine[len(mine) // 2]
            print(
                f"{name:6s} {peer:16s} {r.instances:9d} {len(mine):4d} {r.seconds:8.2f} "
                f"{r.per_s:8.1f} {r.mib_per_s:8.1f} {min(x.stored for x in mine):7d}"
            )
    if args.repeat > 1:
        print("(median run of each; 'stored' is the lowest count over the runs)")
    for name, goal in (("small", 3.0), ("large", 1.5)):
        if (name, "radsight") in median and (name, "orthanc") in median:
            ratio = median[name, "radsight"].per_s / median[name, "orthanc"].per_s
            verdict = "meets" if ratio >= goal else "MISSES"
            print(
                f"ratio Radsight/Orthanc instances/s, {name}: {ratio:.2f}x  ({verdict} the "
                f"goal of >= {goal}x)"
            )
    failed = False
    for r in runs:
        if r.stored != r.instances:
            print(f"LOST: {r.peer} stored {r.stored} of {r.instances} {r.dataset} instances")
            failed = True
    print(f"load at the end: {loadavg()}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
