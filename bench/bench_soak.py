"""Soak under national load: many organisations sending a study mix at a steady rate.

``--orgs`` organisations (default 100), each with its own calling AE title and a
destination (one dcmtk ``storescp`` stands for every organisation's PACS), send
generated chest radiographs (one DX image), screening mammograms (four MG views) and chest
CT series (``--ct-slices`` slices) to ``radsight serve`` over C-STORE, one association per
study, at a steady ``--rate`` images per second (default 0.386: the seed platform's one
million images a month) times ``--peak-factor``, for ``--minutes`` (default 20).
Meanwhile ``--radiologists`` simulated radiologists (HTTP clients with a token acting for
a radiologist user) list the worklist, open a study, fetch a frame and give a conclusion,
and the monitoring pass runs every ``--monitor-interval`` seconds.

Prints per study type the turnaround from the end of the study's association to its SR
at the destination (p50/p95), the resident memory of every Radsight process over time
with its slope (MiB/min, a 95 % interval) and first-vs-last-quarter means, instances sent,
acknowledged, stored and studies delivered (0 lost is the goal), and the ratio of
Radsight's C-STORE rate (images/s per association) against dcmtk's ``storescp`` receiving
the same studies the same way in the same run. Draws memory and turnaround over time as
an SVG (``--svg``).

The studies are routed to ``--algorithm`` (default the deterministic
``radsight-bright-region``; ``--builtin`` uses the built-in rules and models, which this
2-core machine cannot hold at national rate). Images are small (``--size``, default 512;
CT 256) so that the machine's two cores measure the platform, not pixel copying.

Run: ``python bench/bench_soak.py`` (20 min) or ``--minutes 3 --peak-factor 4``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, generate_uid
from pynetdicom import AE, _config

from radsight.dicom.synthetic import make_ct_slice, make_radiograph
from radsight.dicom.uids import PREFIX
from radsight.testing.fuzz import DIGITAL_MAMMOGRAPHY, make_mammogram
from radsight.testing.fuzzrun import MemoryWatch
from radsight.testing.peers import RadsightProcess, Storescp, dcmtk

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
NATIONAL_RATE = 1_000_000 / (30 * 86_400)  # images per second, about 0.386


@dataclass
class Study:
    index: int
    study_type: str
    org: int
    study_instance_uid: str
    datasets: list[bytes]  # Part 10 files
    sent_at: float = 0.0
    send_s: float = 0.0
    acknowledged: int = 0
    delivered_at: float | None = None

    @property
    def turnaround(self) -> float | None:
        return None if self.delivered_at is None else self.delivered_at - self.sent_at


def part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_study(i: int, study_type: str, org: int, args: argparse.Namespace) -> Study:
    uid = generate_uid(prefix=PREFIX)
    series = generate_uid(prefix=PREFIX)
    pid = f"SOAK-{i:05d}"
    spot = (0.3 + 0.4 * (i % 5) / 4, 0.4, 0.08)
    if study_type == "cxr":
        dss = [
            make_radiograph(
                rows=args.size,
                columns=args.size,
                study_instance_uid=uid,
                series_instance_uid=series,
                patient_id=pid,
                seed=i,
                bright_spot=spot,
            )
        ]
    elif study_type == "mmg":
        dss = [
            make_mammogram(
                rows=args.size,
                columns=args.size,
                study_instance_uid=uid,
                series_instance_uid=generate_uid(prefix=PREFIX),
                patient_id=pid,
                seed=i,
                laterality=lat,
                view_position=view,
                instance_number=n + 1,
                bright_spot=spot,
            )
            for n, (lat, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")])
        ]
    else:
        dss = [
            make_ct_slice(
                study_instance_uid=uid, series_instance_uid=series, index=k, patient_id=pid
            )
            for k in range(args.ct_slices)
        ]
    return Study(i, study_type, org, uid, [part10(ds) for ds in dss])


def ae_title(org: int) -> str:
    return f"SOAK{org:03d}"


def send(port: int, study: Study, called: str = "RADSIGHT") -> tuple[float, int]:
    """One association per study; returns (seconds, instances acknowledged 0x0000)."""
    ae = AE(ae_title=ae_title(study.org))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class in (DigitalXRayImageStorageForPresentation, DIGITAL_MAMMOGRAPHY, CTImageStorage):
        ae.add_requested_context(sop_class)
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    ok = 0
    if assoc.is_established:
        try:
            for data in study.datasets:
                status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
                ok += getattr(status, "Status", None) == 0x0000
            assoc.release()
        except RuntimeError as exc:  # the peer aborted the association mid-study
            ABORTED.append(f"{ae_title(study.org)} study {study.index}: {exc}")
    else:
        ABORTED.append(f"{ae_title(study.org)} study {study.index}: association not established")
    return time.monotonic() - t0, ok


#: associations that ended without every instance sent (the senders would try again)
ABORTED: list[str] = []


def poll_destination(scp: Storescp, studies: dict[str, Study], stop: threading.Event) -> None:
    seen: set[Path] = set()
    while not stop.is_set():
        for sub in scp.out_dir.iterdir() if scp.out_dir.exists() else ():
            study = studies.get(sub.name.split("_", 1)[-1])
            if study is None or study.delivered_at is not None or not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f in seen or f.name.startswith("."):
                    continue
                try:
                    ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
                    mtime = f.stat().st_mtime
                except Exception:  # still being written: next time
                    continue
                seen.add(f)
                if str(ds.SOPClassUID).startswith(SR_PREFIX):
                    study.delivered_at = mtime
        stop.wait(0.2)


@dataclass
class Radiologist:
    token: str
    url: str
    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def note(self, what: str, r: httpx.Response, t0: float) -> None:
        key = f"{what} {r.status_code}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.latencies.append(time.monotonic() - t0)

    def work(self, stop: threading.Event, rng: random.Random) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as http:
            while not stop.is_set():
                try:
                    self.read_one(http, rng)
                except httpx.TransportError as exc:
                    # a keep-alive connection the server closed while the reader "read":
                    # counted, and the next request opens a new one (as a browser does)
                    key = f"transport error {type(exc).__name__}"
                    self.counts[key] = self.counts.get(key, 0) + 1
                stop.wait(rng.uniform(2, 6))  # reading time

    def read_one(self, http: httpx.Client, rng: random.Random) -> None:
        t0 = time.monotonic()
        r = http.get("/api/worklist")
        self.note("worklist", r, t0)
        items = r.json().get("studies", []) if r.status_code == 200 else []
        if items:
            item = rng.choice(items)
            t0 = time.monotonic()
            d = http.get(f"/api/studies/{item['id']}")
            self.note("study", d, t0)
            if d.status_code == 200 and d.json()["instances"]:
                inst = rng.choice(d.json()["instances"])
                t0 = time.monotonic()
                f = http.get(
                    f"/dicomweb/studies/{item['study_instance_uid']}/series/"
                    f"{inst['series_instance_uid']}/instances/{inst['sop_instance_uid']}"
                    "/frames/1",
                    headers={"Accept": 'multipart/related; type="application/octet-stream"'},
                )
                self.note("frame", f, t0)
            t0 = time.monotonic()
            v = http.post(
                f"/api/studies/{item['id']}/verdicts",
                json={"kind": "conclusion", "text": "soak: no acute findings"},
            )
            self.note("verdict", v, t0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered) / 100))) - 1]


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope (y per x) and its 95 % half-width (normal approximation)."""
    n = len(points)
    if n < 3:
        return 0.0, float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    resid = sum((y - my - b * (x - mx)) ** 2 for x, y in points) / (n - 2)
    return b, 1.96 * math.sqrt(resid / sxx)


def write_svg(
    path: Path, memory: dict[str, list[tuple[float, float]]], studies: list[Study]
) -> None:
    """Two panels: resident MiB per kind of process over time; turnaround per study."""
    w, h, pad = 900, 560, 60
    colours = {
        "serve": "#1f77b4",
        "worker": "#ff7f0e",
        "total": "#333333",
        "cxr": "#2ca02c",
        "mmg": "#d62728",
        "ct-chest": "#9467bd",
        "resource tracker": "#8c564b",
    }
    t_end = max((t for pts in memory.values() for t, _ in pts), default=1) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]

    def panel(
        y0: int, title: str, ylabel: str, series: dict[str, list[tuple[float, float]]], dots: bool
    ) -> None:
        ph = 200
        ymax = max((v for pts in series.values() for _, v in pts), default=1) * 1.1 or 1
        out.append(f'<text x="{pad}" y="{y0 - 8}" font-weight="bold">{title}</text>')
        out.append(
            f'<rect x="{pad}" y="{y0}" width="{w - 2 * pad}" height="{ph}" '
            'fill="none" stroke="#999"/>'
        )
        for k in range(5):
            v = ymax * k / 4
            y = y0 + ph - ph * k / 4
            out.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{v:.0f}</text>')
        out.append(
            f'<text x="14" y="{y0 + ph / 2}" '
            f'transform="rotate(-90 14 {y0 + ph / 2})">{ylabel}</text>'
        )
        for k in range(5):
            x = pad + (w - 2 * pad) * k / 4
            out.append(
                f'<text x="{x}" y="{y0 + ph + 16}" text-anchor="middle">'
                f"{t_end * k / 4 / 60:.1f} min</text>"
            )
        for n, (name, pts) in enumerate(sorted(series.items())):
            c = colours.get(name, "#17becf")
            xy = [(pad + (w - 2 * pad) * t / t_end, y0 + ph - ph * v / ymax) for t, v in pts]
            if dots:
                out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{c}"/>' for x, y in xy)
            elif xy:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
                out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="1.5"/>')
            out.append(f'<text x="{w - pad - 120}" y="{y0 + 16 + 14 * n}" fill="{c}">{name}</text>')

    panel(40, "Resident memory of Radsight's processes", "MiB", memory, False)
    turn: dict[str, list[tuple[float, float]]] = {}
    t0 = min((s.sent_at for s in studies if s.sent_at), default=0.0)
    for s in studies:
        if s.turnaround is not None:
            turn.setdefault(s.study_type, []).append((s.sent_at - t0, s.turnaround))
    panel(320, "Turnaround: end of association -> SR at the destination", "seconds", turn, True)
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


def setup_server(server: RadsightProcess, scp: Storescp, args: argparse.Namespace) -> list[str]:
    """Organisations, AE titles and destinations through the API; radiologist tokens."""
    with server.http() as http:
        for org in range(args.orgs):
            name = f"Soak Hospital {org:03d}"
            o = http.post("/api/organisations", json={"name": name, "region": f"R{org % 7}"})
            o.raise_for_status()
            oid = o.json()["id"]
            http.post(
                f"/api/organisations/{oid}/ae-titles", json={"ae_title": ae_title(org)}
            ).raise_for_status()
            http.post(
                f"/api/organisations/{oid}/destinations",
                json={
                    "name": "pacs",
                    "ae_title": scp.ae_title,
                    "host": "127.0.0.1",
                    "port": scp.port,
                },
            ).raise_for_status()
    tokens = []
    for r in range(args.radiologists):
        org = f"Soak Hospital {r % args.orgs:03d}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "radsight.cli.main",
                "user",
                "add",
                f"reader{r}",
                "--org",
                org,
                "--role",
                "radiologist",
                "--password-stdin",
            ],
            input="soak-password-1234\n",
            env=server.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        tokens.append(
            server.make_token(
                "radiologist", "--org", org, "--user", f"reader{r}", name=f"reader{r}"
            )
        )
    return tokens


def peer_rate(work: Path, studies: list[Study], n: int) -> tuple[float, float]:
    """(Radsight, storescp) images per second of association time, over the same studies."""
    sample = [s for s in studies if s.acknowledged][:n]
    scp = Storescp(work / "peer-storescp", ae_title="PEERSCP").start()
    try:
        spent = sum(send(scp.port, s, called=scp.ae_title)[0] for s in sample)
    finally:
        scp.stop()
    images = sum(len(s.datasets) for s in sample)
    ours = images / sum(s.send_s for s in sample) if sample else 0.0
    return ours, (images / spent if spent else 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--orgs", type=int, default=100)
    ap.add_argument("--rate", type=float, default=NATIONAL_RATE, help="images per second")
    ap.add_argument("--peak-factor", type=float, default=1.0, help="multiplies --rate")
    ap.add_argument("--mix", default="cxr=0.6,mmg=0.25,ct-chest=0.15", help="studies by type")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--ct-slices", type=int, default=16)
    ap.add_argument("--radiologists", type=int, default=3)
    ap.add_argument("--monitor-interval", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--algorithm", default="radsight-bright-region")
    ap.add_argument("--builtin", action="store_true", help="the built-in rules and models")
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait after the last send")
    ap.add_argument("--peer-studies", type=int, default=40)
    ap.add_argument("--svg", type=Path, default=Path("docs/security/soak.svg"))
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    dcmtk("storescp")
    _config.LOG_HANDLER_LEVEL = "none"
    rate = args.rate * args.peak_factor
    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="radsight-bench-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"radsight soak  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {platform.machine()}  "
        f"{os.cpu_count()} CPUs  load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )
    print(
        f"{args.orgs} organisations, {rate:.3f} images/s ({rate / NATIONAL_RATE:.1f}x national "
        f"volume) for {args.minutes:g} min, mix {mix}, {args.radiologists} radiologists, "
        f"monitoring every {args.monitor_interval:g} s, {args.workers} workers, "
        f"algorithm {'built-in rules' if args.builtin else args.algorithm}"
    )
    env = {"RADSIGHT_MONITOR_INTERVAL_S": str(args.monitor_interval)}
    if not args.builtin:
        rules = work / "rules.yaml"
        rules.write_text(
            f'version: "soak"\nrules:\n  - name: all\n    match: {{}}\n'
            f"    algorithms: [{args.algorithm}]\n"
        )
        env["RADSIGHT_ROUTING_RULES"] = str(rules)
    scp = Storescp(work / "pacs").start()
    server = RadsightProcess(work / "radsight", workers=args.workers, env=env)
    stop = threading.Event()
    studies: list[Study] = []
    memory = None
    try:
        server.start()
        tokens = setup_server(server, scp, args)
        time.sleep(1.5)  # the listener's AE title cache
        assert server.proc is not None
        memory = MemoryWatch(server.proc.pid, interval_s=2.0).start()
        by_uid: dict[str, Study] = {}
        poller = threading.Thread(target=poll_destination, args=(scp, by_uid, stop), daemon=True)
        poller.start()
        readers = [Radiologist(t, server.url) for t in tokens]
        for n, r in enumerate(readers):
            threading.Thread(target=r.work, args=(stop, random.Random(n)), daemon=True).start()
        t0 = time.monotonic()
        due = t0
        end = t0 + args.minutes * 60
        kinds, weights = list(mix), list(mix.values())
        with ThreadPoolExecutor(8) as pool:
            futures = []
            while due < end:
                st = make_study(
                    len(studies), rng.choices(kinds, weights)[0], rng.randrange(args.orgs), args
                )
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                by_uid[st.study_instance_uid] = st
                studies.append(st)

                def go(s: Study = st) -> None:
                    s.send_s, s.acknowledged = send(server.dicom_port, s)
                    s.sent_at = time.time()

                futures.append(pool.submit(go))
                due += len(st.datasets) / rate
                if len(studies) % 25 == 0:
                    done = sum(s.delivered_at is not None for s in studies)
                    total = memory.total_mb()[-1][1] if memory.samples else 0
                    print(
                        f"  {(time.monotonic() - t0) / 60:5.1f} min: {len(studies)} studies sent, "
                        f"{done} delivered, RSS {total:.0f} MiB, load "
                        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
                        flush=True,
                    )
            for f in futures:
                f.result()
        send_end = time.monotonic()
        while time.monotonic() < send_end + args.wait and any(
            s.delivered_at is None and s.acknowledged for s in studies
        ):
            time.sleep(0.5)
        stop.set()
        memory.stop()
        report(server, studies, memory, readers, args)
        ours, theirs = peer_rate(work, studies, args.peer_studies)
        print(
            f"C-STORE images/s per association: radsight {ours:.1f}, dcmtk storescp {theirs:.1f}; "
            f"ratio Radsight/storescp {ours / theirs if theirs else float('nan'):.2f}x"
        )
        series = {}
        for label in sorted({n for _, p in memory.samples for n, _ in p.values()}):
            series[label] = [
                (t - memory.samples[0][0], sum(mb for n, mb in p.values() if n == label))
                for t, p in memory.samples
            ]
        write_svg(args.svg, series, studies)
        print(f"picture: {args.svg}")
        lost = sum(len(s.datasets) - s.acknowledged for s in studies)
        undelivered = sum(s.delivered_at is None for s in studies)
        if ABORTED:
            print(f"associations cut short: {len(ABORTED)}")
            for line in ABORTED[:10]:
                print(f"  {line}")
        if lost or undelivered or ABORTED:
            kept = Path(tempfile.gettempdir()) / "bench-soak-serve.log"
            shutil.copyfile(server.log_path, kept)
            print(f"server log kept: {kept}")
        return 1 if lost or undelivered else 0
    finally:
        stop.set()
        if memory is not None:
            memory.stop()
        server.stop()
        scp.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(
    server: RadsightProcess,
    studies: list[Study],
    memory: MemoryWatch,
    readers: list[Radiologist],
    args: argparse.Namespace,
) -> None:
    sent = sum(len(s.datasets) for s in studies)
    acked = sum(s.acknowledged for s in studies)
    stored = 0
    with server.http() as http:
        offset = 0
        while True:
            page = http.get("/api/studies", params={"limit": 1000, "offset": offset}).json()
            stored += sum(s["num_instances"] for s in page)
            if len(page) < 1000:
                break
            offset += 1000
    delivered = sum(s.delivered_at is not None for s in studies)
    print(
        f"\ninstances sent {sent}, acknowledged {acked}, stored {stored}; studies sent "
        f"{len(studies)}, delivered (SR at the PACS) {delivered}; "
        f"lost {sent - acked + max(0, acked - stored)}"
    )
    print("turnaround, end of association -> SR at the destination:")
    for kind in sorted({s.study_type for s in studies}):
        t = [x for s in studies if s.study_type == kind and (x := s.turnaround) is not None]
        n = sum(s.study_type == kind for s in studies)
        if t:
            print(
                f"  {kind:9s} {len(t):4d}/{n:<4d} p50 {percentile(t, 50):6.2f} s  "
                f"p95 {percentile(t, 95):6.2f} s  max {max(t):6.2f} s"
            )
    samples = memory.total_mb()
    t0 = samples[0][0]
    pts = [((t - t0) / 60, mb) for t, mb in samples]
    b, ci = slope(pts)
    q = max(1, len(pts) // 4)
    first, last = statistics.mean(v for _, v in pts[:q]), statistics.mean(v for _, v in pts[-q:])
    print(
        f"resident memory, all Radsight processes: start {pts[0][1]:.0f} MiB, end {pts[-1][1]:.0f} "
        f"MiB, peak {max(v for _, v in pts):.0f} MiB; slope {b:+.2f} MiB/min (95 % CI "
        f"{b - ci:+.2f} to {b + ci:+.2f}); first quarter {first:.0f}, last quarter {last:.0f} MiB"
    )
    b2, ci2 = slope(pts[q:])
    print(
        f"  after warm-up (first quarter left out): slope {b2:+.2f} MiB/min "
        f"(95 % CI {b2 - ci2:+.2f} to {b2 + ci2:+.2f})"
    )
    peak = memory.peak_mb()
    labels = {pid: n for _, p in memory.samples for pid, (n, _) in p.items()}
    print(
        "  peak per process: " + ", ".join(f"{labels[p]} {v:.0f}" for p, v in sorted(peak.items()))
    )
    counts: dict[str, int] = {}
    for r in readers:
        for k, v in r.counts.items():
            counts[k] = counts.get(k, 0) + v
    lat = [x for r in readers for x in r.latencies]
    if lat:
        print(
            f"radiologists: {dict(sorted(counts.items()))}; "
            f"request p50 {percentile(lat, 50) * 1000:.0f} ms, "
            f"p95 {percentile(lat, 95) * 1000:.0f} ms"
        )
    bad = [ln for ln in server.log().splitlines() if " ERROR " in ln or "Traceback" in ln]
    print(f"serve log: {len(bad)} error lines" + (f", first: {bad[0]}" if bad else ""))


if __name__ == "__main__":
    sys.exit(main())
