"""Fuzz benchmark: the CI fuzz test's hostile input for longer, against dcmtk's storescp.

For ``--minutes`` (default 5), rounds of mutated instances (:mod:`radsight.testing.fuzz`,
every mutation class in turn, ``--seed``) go to ``radsight serve`` over C-STORE and
STOW-RS, and raw malformed PDUs to its DICOM port; after each round the server must be
alive and a registered modality's C-ECHO must succeed within 5 s. Afterwards every
acknowledged instance must be retrievable (QIDO-RS + WADO-RS).

The peer is dcmtk's ``storescp`` (``+xa``: every transfer syntax it knows) receiving the
same C-STORE mutants and the same raw PDUs in the same run: does it survive, and at what
rate does it answer? Prints outcomes per channel, mutation class and result, the peak
resident memory of every process, and the ratio of the two C-STORE rates.

Run: ``python bench/bench_fuzz.py --minutes 5 --seed 16`` (``--minutes 1`` for a look).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from radsight.testing import fuzz
from radsight.testing.fuzzrun import (
    DimseSender,
    MemoryWatch,
    Outcome,
    echo,
    lost_outcomes,
    send_pdu,
    stow,
    summary,
)
from radsight.testing.peers import RadsightProcess, Storescp, dcmtk

MODALITY = "FUZZMOD"
ROUND = 44  # mutants per channel per round: 4 of each mutation class


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mb(pid: int) -> float:
    try:
        return (
            int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            * os.sysconf("SC_PAGE_SIZE")
            / 2**20
        )
    except OSError:
        return 0.0


def alive_and_answering(proc, port: int, called: str) -> str:  # type: ignore[no-untyped-def]
    if proc.poll() is not None:
        return f"DIED (exit {proc.returncode})"
    try:
        return f"echo {echo(port, MODALITY, called=called):.2f} s"
    except AssertionError as exc:
        return f"NOT ANSWERING ({exc})"


def run_radsight(work: Path, args: argparse.Namespace) -> tuple[list[Outcome], list, float, int]:
    rules = work / "rules.yaml"
    rules.write_text(
        'version: "bench"\nrules:\n  - name: all\n    match: {}\n'
        "    algorithms: [radsight-bright-region]\n"
    )
    server = RadsightProcess(
        work / "radsight",
        workers=1,
        memory_limit_mb=args.memory_cap_mb,
        env={"RADSIGHT_ROUTING_RULES": str(rules), "RADSIGHT_DIMSE_TIMEOUT_S": "10"},
    )
    server.cli("org", "add", "Fuzz Hospital", "--region", "North")
    server.cli("ae", "add", "Fuzz Hospital", MODALITY)
    server.start()
    assert server.proc is not None
    token = server.make_token("org_admin", "--org", "Fuzz Hospital", name="fuzz")
    memory = MemoryWatch(server.proc.pid, interval_s=1.0).start()
    corpus = fuzz.base_corpus()
    syntaxes = sorted({str(s) for s in fuzz.TRANSFER_SYNTAXES})
    sender = DimseSender(
        server.dicom_port, MODALITY, sorted({s.sop_class_uid for s in corpus}), syntaxes, work
    )
    outcomes: list[Outcome] = []
    cstore_s = 0.0
    problems = 0
    deadline = time.monotonic() + args.minutes * 60
    rnd = 0
    try:
        with server.http(token) as client:
            while time.monotonic() < deadline:
                seed = args.seed * 1_000_003 + rnd
                t0 = time.monotonic()
                for m in fuzz.mutants(seed, ROUND, corpus):
                    outcomes.append(sender.send(m))
                cstore_s += time.monotonic() - t0
                for m in fuzz.mutants(seed + 500_000, ROUND, corpus):
                    outcomes.append(stow(client, m))
                for attack, data in fuzz.pdus(seed, ROUND // 2):
                    outcomes.append(send_pdu(server.dicom_port, attack, data))
                state = alive_and_answering(server.proc, server.dicom_port, "RADSIGHT")
                total = memory.total_mb()[-1][1] if memory.samples else 0.0
                print(
                    f"  round {rnd}: {len(outcomes)} inputs, {state}, "
                    f"RSS {total:.0f} MiB, load {loadavg()}",
                    flush=True,
                )
                if not state.startswith("echo") or float(state.split()[1]) > 5:
                    problems += 1
                    if server.proc.poll() is not None:
                        break
                rnd += 1
        sender.close()
        acknowledged = {uid for o in outcomes for uid in o.acknowledged}
        with server.http(token) as client:
            lost = lost_outcomes(client, outcomes)
        for o in lost:
            print(f"  LOST: {o.channel} {o.attack} {o.result} {o.acknowledged} ({o.detail})")
        errors = [o for o in outcomes if o.server_error]
        print(f"radsight: {len(acknowledged)} acknowledged, {len(lost)} LOST, {len(errors)} 5xx")
        problems += len(lost) + len(errors)
        peak = memory.peak_mb()
        labels = {pid: name for _, procs in memory.samples for pid, (name, _) in procs.items()}
        print(
            "radsight peak RSS: "
            + ", ".join(f"{labels[p]} {pid_mb:.0f} MiB" for p, pid_mb in sorted(peak.items()))
        )
        if len(memory.pids("worker")) > 1:
            print(f"radsight: {len(memory.pids('worker')) - 1} worker(s) died and were restarted")
            problems += 1
    finally:
        memory.stop()
        server.stop()
    n_cstore = sum(o.channel == "cstore" for o in outcomes)
    return outcomes, [cstore_s, n_cstore], problems, rnd


def run_storescp(
    work: Path, args: argparse.Namespace, rounds: int
) -> tuple[list[Outcome], list, int]:
    scp = Storescp(work / "storescp", extra=["+xa"]).start()
    assert scp.proc is not None
    corpus = fuzz.base_corpus()
    syntaxes = sorted({str(s) for s in fuzz.TRANSFER_SYNTAXES})
    sender = DimseSender(
        scp.port,
        MODALITY,
        sorted({s.sop_class_uid for s in corpus}),
        syntaxes,
        work,
        called=scp.ae_title,
    )
    outcomes: list[Outcome] = []
    cstore_s = 0.0
    problems = 0
    peak = 0.0
    try:
        for rnd in range(rounds):
            seed = args.seed * 1_000_003 + rnd
            t0 = time.monotonic()
            for m in fuzz.mutants(seed, ROUND, corpus):
                outcomes.append(sender.send(m))
            cstore_s += time.monotonic() - t0
            for attack, data in fuzz.pdus(seed, ROUND // 2):
                outcomes.append(send_pdu(scp.port, attack, data))
            peak = max(peak, rss_mb(scp.proc.pid))
            state = alive_and_answering(scp.proc, scp.port, scp.ae_title)
            if not state.startswith("echo"):
                problems += 1
                print(f"  storescp round {rnd}: {state}")
                if scp.proc.poll() is not None:
                    break
        sender.close()
        print(
            f"storescp: {'alive' if scp.proc.poll() is None else 'DIED'}, peak RSS {peak:.0f} MiB"
        )
    finally:
        scp.stop()
        shutil.rmtree(scp.out_dir, ignore_errors=True)
    n_cstore = sum(o.channel == "cstore" for o in outcomes)
    return outcomes, [cstore_s, n_cstore], problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="how long Radsight is fuzzed")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--memory-cap-mb", type=int, default=3072, help="prlimit --as per process")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    ap.add_argument(
        "--max-depth", type=int, default=1000, help="deepest sequence nesting (CI: 400)"
    )
    args = ap.parse_args()
    fuzz.SEQUENCE_DEPTH_MAX = args.max_depth
    dcmtk("storescp")
    work = args.keep or Path(tempfile.mkdtemp(prefix="radsight-bench-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"radsight fuzz benchmark  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
        f"{platform.machine()}  {os.cpu_count()} CPUs  load {loadavg()}  seed {args.seed}"
    )
    print(
        f"mutation classes: {', '.join(sorted(fuzz.MUTATIONS))}\n"
        f"PDU attack classes: {', '.join(sorted(fuzz.PDU_ATTACKS))}"
    )
    try:
        ours, (ours_s, ours_n), problems, rounds = run_radsight(work, args)
        print(f"\nradsight, {rounds} rounds:\n{summary(ours)}\n")
        theirs, (theirs_s, theirs_n), peer_problems = run_storescp(work, args, rounds)
        print(f"\ndcmtk storescp, the same C-STORE mutants and PDUs:\n{summary(theirs)}\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ours_rate = ours_n / ours_s if ours_s else 0.0
    theirs_rate = theirs_n / theirs_s if theirs_s else 0.0
    print(
        f"C-STORE mutants answered per second: radsight {ours_rate:.1f}, storescp {theirs_rate:.1f}"
    )
    if theirs_rate:
        print(f"ratio Radsight/storescp C-STORE mutants per second: {ours_rate / theirs_rate:.2f}x")
    print(f"problems: radsight {problems}, storescp {peer_problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
