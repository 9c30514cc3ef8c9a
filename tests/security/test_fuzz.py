"""Seeded fuzzing of ``radsight serve``: mutated instances over C-STORE and STOW-RS, raw
malformed PDUs on the DICOM port (issue 16).

One server for the module (loopback, address space capped with prlimit, one worker that
analyses what gets in). After every batch: the server process is alive, no worker died,
a registered modality's C-ECHO succeeds within 5 s. At the end: every acknowledged
instance is retrievable over QIDO-RS + WADO-RS, every refused one has a rejection record,
and no process grew past a bound. ``RADSIGHT_FUZZ_SEED`` replays another seed; the
attack classes are in :mod:`radsight.testing.fuzz` (one function each), the longer run
is ``bench/bench_fuzz.py``. The single-case bad-input tests are in
``tests/e2e/test_bad_input.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from radsight.testing import fuzz
from radsight.testing.fuzzrun import (
    DimseSender,
    MemoryWatch,
    Outcome,
    dataset_uid,
    lost_outcomes,
    send_pdu,
    stow,
    summary,
    wait_for_echo,
)
from radsight.testing.peers import RadsightProcess
from tests.conftest import write_rules

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("RADSIGHT_FUZZ_SEED", "16"))
N_CSTORE = 60  # 6 of each of the 10 mutation classes
N_STOW = 60
N_PDU = 49  # 7 of each of the 7 PDU attack classes
BATCH = 20
MODALITY = "FUZZMOD"
#: resident size no process of the server may pass (it starts at about 250 MiB)
MAX_RSS_MB = 1024
#: how long a registered modality may wait for its C-ECHO after a batch: the listener
#: reaps aborted and idle connections (dicom_handshake_timeout_s, dicom_idle_timeout_s) and
#: holds slots per peer, so a burst of bad PDUs leaves room for a registered modality
ECHO_WITHIN_S = 5.0
#: address space of each process (prlimit --as): a runaway allocation fails, not the machine
MEMORY_CAP_MB = 3072


@dataclass
class Fuzzed:
    server: RadsightProcess
    org_token: str
    memory: MemoryWatch
    work: Path
    outcomes: list[Outcome] = field(default_factory=list)
    echo_waits: list[float] = field(default_factory=list)
    #: each C-STORE mutant with what it got back
    cstore: list[tuple[fuzz.Mutant, Outcome]] = field(default_factory=list)
    #: channel -> why its run stopped (the server died, a C-ECHO went unanswered, ...)
    broke: dict[str, str] = field(default_factory=dict)
    control: Outcome | None = None

    def still_answering(self) -> None:
        assert self.server.proc is not None and self.server.proc.poll() is None, "server died"
        self.echo_waits.append(wait_for_echo(self.server.dicom_port, MODALITY, ECHO_WITHIN_S))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    work = tmp_path_factory.mktemp("fuzz")
    rules = write_rules(work / "rules.yaml", ["radsight-bright-region"])
    server = RadsightProcess(
        work / "radsight",
        workers=1,
        memory_limit_mb=MEMORY_CAP_MB,
        env={"RADSIGHT_ROUTING_RULES": str(rules), "RADSIGHT_DIMSE_TIMEOUT_S": "10"},
    )
    server.cli("org", "add", "Fuzz Hospital", "--region", "North")
    server.cli("ae", "add", "Fuzz Hospital", MODALITY)
    server.start()
    token = server.make_token("org_admin", "--org", "Fuzz Hospital", name="fuzz")
    assert server.proc is not None
    memory = MemoryWatch(server.proc.pid).start()
    state = Fuzzed(server, token, memory, work)
    try:
        # the fuzz runs once, here, and each test asserts on its results: any one of them
        # can run alone (-k) and still checks a whole run
        for channel, run in (("cstore", _fuzz_cstore), ("stow", _fuzz_stow), ("pdu", _fuzz_pdus)):
            try:
                run(state)
            except Exception as exc:  # noqa: BLE001 - the channel's test reports it
                state.broke[channel] = f"{type(exc).__name__}: {exc}"
        yield state
    finally:
        memory.stop()
        waits = ", ".join(f"{w:.1f}" for w in state.echo_waits)
        print(
            f"\nfuzz seed {SEED}: outcomes by channel, class and result\n{summary(state.outcomes)}"
        )
        print(f"C-ECHO after each batch answered in (s): {waits}")
        server.stop()


def _fuzz_cstore(fuzzed: Fuzzed) -> None:
    corpus = fuzz.base_corpus()
    mutants = fuzz.mutants(SEED, N_CSTORE, corpus)
    sender = DimseSender(
        fuzzed.server.dicom_port,
        MODALITY,
        sorted({s.sop_class_uid for s in corpus}),
        sorted(fuzz.TRANSFER_SYNTAXES),
        fuzzed.work,
    )
    try:
        for start in range(0, len(mutants), BATCH):
            for m in mutants[start : start + BATCH]:
                outcome = sender.send(m)
                fuzzed.outcomes.append(outcome)
                fuzzed.cstore.append((m, outcome))
            fuzzed.still_answering()
    finally:
        sender.close()


def _fuzz_stow(fuzzed: Fuzzed) -> None:
    mutants = fuzz.mutants(SEED + 1, N_STOW, fuzz.base_corpus())
    with fuzzed.server.http(fuzzed.org_token) as client:
        for start in range(0, len(mutants), BATCH):
            for m in mutants[start : start + BATCH]:
                fuzzed.outcomes.append(stow(client, m))
            fuzzed.still_answering()


def _fuzz_pdus(fuzzed: Fuzzed) -> None:
    attacks = fuzz.pdus(SEED, N_PDU)
    for start in range(0, len(attacks), BATCH):
        for attack, data in attacks[start : start + BATCH]:
            fuzzed.outcomes.append(send_pdu(fuzzed.server.dicom_port, attack, data))
        fuzzed.still_answering()
    # a well-formed association request from a registered AE still gets an answer
    fuzzed.control = send_pdu(fuzzed.server.dicom_port, "control", fuzz.associate_rq(MODALITY))


def test_cstore_of_mutated_instances(fuzzed: Fuzzed) -> None:
    assert "cstore" not in fuzzed.broke, fuzzed.broke["cstore"]
    assert len(fuzzed.cstore) == N_CSTORE
    results = {o.result for _m, o in fuzzed.cstore}
    assert "0x0000" in results  # some mutants are harmless and go in
    assert results - {"0x0000"}  # and the others are refused with a status
    # a failure of Radsight's own (0x0110 Processing Failure, the DIMSE 5xx) is a finding
    failed = [f"{m.mutation} ({m.detail})" for m, o in fuzzed.cstore if o.result == "0x0110"]
    assert not failed, f"Processing Failure for {failed}"
    # Out of Resources only as a size refusal, recorded under the instance's UID
    out_of_resources = [(m, o) for m, o in fuzzed.cstore if o.result == "0xA700"]
    if out_of_resources:
        with fuzzed.server.http() as admin:
            rows = admin.get("/api/rejections", params={"limit": 1000}).json()
        sized = {r["sop_instance_uid"] for r in rows if r["error_code"] == "too_large"}
        unexplained = [
            f"{m.mutation} ({m.detail})"
            for m, _o in out_of_resources
            if not {m.sop_instance_uid, dataset_uid(m)} & sized
        ]
        assert not unexplained, f"0xA700 without a too_large record: {unexplained}"


def test_stow_of_mutated_instances(fuzzed: Fuzzed) -> None:
    assert "stow" not in fuzzed.broke, fuzzed.broke["stow"]
    sent = [o for o in fuzzed.outcomes if o.channel == "stow"]
    assert len(sent) == N_STOW
    for o in sent:
        assert not o.server_error, f"{o.attack} ({o.detail}): {o.result}"
        assert o.result in ("HTTP 200", "HTTP 202", "HTTP 409", "HTTP 413"), (o.attack, o.detail)


def test_raw_malformed_pdus(fuzzed: Fuzzed) -> None:
    assert "pdu" not in fuzzed.broke, fuzzed.broke["pdu"]
    assert sum(o.channel == "pdu" for o in fuzzed.outcomes) == N_PDU
    ok = fuzzed.control
    assert ok is not None and ok.result == "answered PDU 0x02", ok  # A-ASSOCIATE-AC


def test_nothing_acknowledged_is_lost_and_every_refusal_is_recorded(fuzzed: Fuzzed) -> None:
    sent = [o for o in fuzzed.outcomes if o.channel in ("cstore", "stow")]
    assert len(sent) == N_CSTORE + N_STOW, fuzzed.broke
    assert any(o.acknowledged for o in sent)
    with fuzzed.server.http(fuzzed.org_token) as client:
        assert lost_outcomes(client, sent) == []
    with fuzzed.server.http() as admin:
        rows = admin.get("/api/rejections", params={"limit": 1000}).json()
    for channel, source in (("cstore", "dimse"), ("stow", "stow")):
        refused = sum(o.refused for o in sent if o.channel == channel)
        recorded = sum(1 for r in rows if r["source"] == source)
        assert recorded >= refused, f"{channel}: {refused} refused, {recorded} recorded"


def test_memory_stayed_bounded_and_no_worker_died(fuzzed: Fuzzed) -> None:
    fuzzed.still_answering()
    peak = fuzzed.memory.peak_mb()
    assert peak and max(peak.values()) < MAX_RSS_MB, peak
    assert len(fuzzed.memory.pids("worker")) == 1, "a worker died and was started again"
