"""Send :mod:`radsight.testing.fuzz`'s hostile input to a running server and watch it.

Three channels, each returning one :class:`Outcome` per attempt: C-STORE
(:class:`DimseSender`, pynetdicom with short timeouts, the data set's bytes sent as they
are), STOW-RS (:func:`stow`) and raw bytes on the DICOM port (:func:`send_pdu`). Then the
checks a user would make: does a registered modality's C-ECHO still succeed
(:func:`echo`), is every acknowledged instance and its metadata retrievable
(:func:`lost_instances`), did every analysis of what was accepted end with a specific
code (:func:`unexplained_job_failures`), how much memory does every process of the
server use (:class:`MemoryWatch`).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from radsight.testing.fuzz import Mutant

logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # one line per bad PDU otherwise

DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class Outcome:
    """What one hostile input got back."""

    channel: str  # cstore, stow, pdu
    attack: str  # the mutation or PDU attack class
    result: str  # e.g. "0x0000", "0xC000", "no response", "HTTP 409", "closed"
    acknowledged: tuple[str, ...] = ()  # SOP Instance UIDs the server said it stored
    refused: int = 0  # instances the server said it did not store
    seconds: float = 0.0
    #: other UIDs it may be stored under (a mutated data set's UID may read differently)
    alternatives: tuple[str, ...] = ()
    detail: str = ""

    @property
    def server_error(self) -> bool:
        return self.result.startswith("HTTP 5")


def dataset_uid(m: Mutant) -> str:
    """The SOP Instance UID inside the (mutated) data set, as a reader would find it."""
    try:
        ds = pydicom.dcmread(io.BytesIO(m.part10()), force=True, specific_tags=["SOPInstanceUID"])
        return str(ds.SOPInstanceUID)
    except Exception:  # a mutant pydicom cannot read: fall back to the file meta's UID
        return m.sop_instance_uid


class DimseSender:
    """C-STORE of mutants over one association, opened again after each abort."""

    def __init__(
        self,
        port: int,
        calling: str,
        sop_classes: list[str],
        transfer_syntaxes: list[str],
        work: Path,
        called: str = "RADSIGHT",
        timeout_s: float = 5.0,
    ) -> None:
        _config.STORE_SEND_CHUNKED_DATASET = True  # the bytes as they are, never re-encoded
        self.port = port
        self.called = called
        self.work = work
        self.ae = AE(ae_title=calling)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout_s
        for sop_class in sop_classes:
            for syntax in transfer_syntaxes:
                self.ae.add_requested_context(sop_class, syntax)
        self.assoc = None  # type: ignore[var-annotated]

    def _association(self):  # type: ignore[no-untyped-def]
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title=self.called)
        return self.assoc

    def send(self, m: Mutant) -> Outcome:
        path = self.work / "mutant.dcm"
        path.write_bytes(m.part10())
        t0 = time.monotonic()
        assoc = self._association()
        if not assoc.is_established:
            self.assoc = None
            return Outcome(
                "cstore", m.mutation, "association refused", seconds=time.monotonic() - t0
            )
        try:
            status = assoc.send_c_store(path)
        except ValueError:  # no accepted presentation context for this syntax
            return Outcome("cstore", m.mutation, "no context", seconds=time.monotonic() - t0)
        dt = time.monotonic() - t0
        code = getattr(status, "Status", None)
        if code is None:
            self.close()
            return Outcome("cstore", m.mutation, "no response", seconds=dt)
        # success, and warnings (0xB...), store the instance (PS3.4 B.2.3)
        stored = (dataset_uid(m),) if code == 0 or code & 0xF000 == 0xB000 else ()
        return Outcome(
            "cstore",
            m.mutation,
            f"0x{code:04X}",
            stored,
            int(not stored),
            dt,
            (m.sop_instance_uid,) if stored else (),
            m.detail,
        )

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


def stow(client: httpx.Client, m: Mutant, boundary: str = "fuzz-b0undary") -> Outcome:
    """POST one mutant to ``/dicomweb/studies`` (``client`` has an organisation's token)."""
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + m.part10()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    t0 = time.monotonic()
    try:
        r = client.post(
            "/dicomweb/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": DICOM_JSON},
        )
    except httpx.HTTPError as exc:
        return Outcome("stow", m.mutation, f"transport {type(exc).__name__}")
    dt = time.monotonic() - t0
    acknowledged: tuple[str, ...] = ()
    refused = 0
    if r.headers.get("content-type", "").startswith(DICOM_JSON):
        answer = r.json()
        items = answer.get("00081199", {}).get("Value", [])
        acknowledged = tuple(i["00081155"]["Value"][0] for i in items)
        refused = len(answer.get("00081198", {}).get("Value", []))
    return Outcome(
        "stow", m.mutation, f"HTTP {r.status_code}", acknowledged, refused, dt, detail=m.detail
    )


def send_pdu(port: int, attack: str, data: bytes, timeout_s: float = 1.0) -> Outcome:
    """Write raw bytes to the DICOM port, read what comes back, then close."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        try:
            s.sendall(data)
            answer = s.recv(6)
        except TimeoutError:
            result = "silent"
        except OSError as exc:  # reset while we were writing: the server closed on us
            result = f"closed ({type(exc).__name__})"
        else:
            result = f"answered PDU 0x{answer[0]:02X}" if answer else "closed"
    return Outcome("pdu", attack, result, seconds=time.monotonic() - t0)


def echo(port: int, calling: str, called: str = "RADSIGHT", timeout_s: float = 5.0) -> float:
    """Seconds a registered modality's C-ECHO took; raises AssertionError if it failed."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(Verification)
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"C-ECHO from {calling}: association not established"
    status = assoc.send_c_echo()
    assoc.release()
    assert getattr(status, "Status", None) == 0x0000, f"C-ECHO from {calling}: {status}"
    return time.monotonic() - t0


def wait_for_echo(port: int, calling: str, within_s: float, called: str = "RADSIGHT") -> float:
    """Seconds until a C-ECHO succeeded, trying again while the listener refuses (a full
    association table answers at once); raises AssertionError past ``within_s``."""
    t0 = time.monotonic()
    while True:
        try:
            echo(port, calling, called, timeout_s=min(5.0, within_s))
            return time.monotonic() - t0
        except AssertionError:
            if time.monotonic() - t0 > within_s:
                raise
            time.sleep(0.5)


def lost_instances(client: httpx.Client, uids: set[str], page: int = 1000) -> list[str]:
    """Acknowledged SOP Instance UIDs that QIDO-RS does not list or WADO-RS cannot return
    (the instance, or its metadata)."""
    where: dict[str, tuple[str, str]] = {}
    offset = 0
    while True:
        r = client.get("/dicomweb/instances", params={"limit": page, "offset": offset})
        r.raise_for_status()
        found = r.json() if r.content else []
        for item in found:
            uid = item["00080018"]["Value"][0]
            where[uid] = (item["0020000D"]["Value"][0], item["0020000E"]["Value"][0])
        if len(found) < page:
            break
        offset += page

    def retrievable(uid: str) -> bool:
        study, series = where[uid]
        url = f"/dicomweb/studies/{study}/series/{series}/instances/{uid}"
        w = client.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
        if w.status_code != 200 or len(w.content) <= 132:
            return False
        # its metadata too: a viewer opens a study with it (a deep sequence once failed here)
        m = client.get(url + "/metadata", headers={"Accept": DICOM_JSON})
        return m.status_code == 200 and bool(m.json())

    listed = sorted(u for u in uids if u in where)
    with ThreadPoolExecutor(4) as pool:
        ok = dict(zip(listed, pool.map(retrievable, listed), strict=True))
    return sorted(u for u in uids if not ok.get(u, False))


def lost_outcomes(client: httpx.Client, outcomes: list[Outcome]) -> list[Outcome]:
    """Outcomes with an acknowledged instance found under none of its possible UIDs."""
    acknowledged = [o for o in outcomes if o.acknowledged]
    missing = set(
        lost_instances(
            client, {u for o in acknowledged for u in (*o.acknowledged, *o.alternatives)}
        )
    )
    return [
        o
        for o in acknowledged
        for uid in o.acknowledged
        if uid in missing and all(a in missing for a in o.alternatives)
    ]


#: the job edge's code for an exception no :mod:`radsight.errors` class names (a bug)
INTERNAL_ERROR = "internal_error"


def unexplained_job_failures(client: httpx.Client, limit: int = 1000) -> list[str]:
    """Jobs (the newest ``limit``) that failed as ``internal_error`` or without a code.

    Input that ingest accepted but an algorithm cannot use ends as a result "not
    analysed: <reason>" or a specific, permanent code; an ``internal_error`` is retried
    up to job_max_attempts and raises a technical alarm. One ``GET /api/jobs``."""
    r = client.get("/api/jobs", params={"limit": limit})
    r.raise_for_status()
    return [
        f"job {j['id']} ({j['kind']}, {j['state']}, attempt {j['attempts']}): "
        f"{j['error_code'] or 'no code'}: {j['error'][:200]}"
        for j in r.json()
        if j["error_code"] == INTERNAL_ERROR
        or (j["state"] in ("failed", "dead") and not j["error_code"])
    ]


# --- memory of every process of a server ----------------------------------------------------


def session_rss_mb(session_id: int) -> dict[int, tuple[str, float]]:
    """pid -> (name, resident MiB) of every process in a session (the server and its
    workers: ``RadsightProcess`` starts ``radsight serve`` in a new session)."""
    page = os.sysconf("SC_PAGE_SIZE")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session_id:  # field 6 of stat, the session id
            out[int(entry)] = (_label(int(entry), stat), int(statm[1]) * page / 2**20)
    return out


def _label(pid: int, stat: str) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmdline = ""
    for needle, label in (
        (" serve", "serve"),
        (" worker", "celery worker"),
        ("spawn_main", "worker"),
        ("resource_tracker", "resource tracker"),
    ):
        if needle in cmdline:
            return label
    return stat[stat.index("(") + 1 : stat.rindex(")")]


@dataclass
class MemoryWatch:
    """Samples every process of a session every ``interval_s`` in a thread."""

    session_id: int
    interval_s: float = 0.5
    samples: list[tuple[float, dict[int, tuple[str, float]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemoryWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), session_rss_mb(self.session_id)))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def peak_mb(self) -> dict[int, float]:
        """The highest resident size seen of each process."""
        peak: dict[int, float] = {}
        for _, procs in self.samples:
            for pid, (_, mb) in procs.items():
                peak[pid] = max(peak.get(pid, 0.0), mb)
        return peak

    def total_mb(self) -> list[tuple[float, float]]:
        """(time, sum of resident MiB over the session's processes) per sample."""
        return [(t, sum(mb for _, mb in procs.values())) for t, procs in self.samples]

    def pids(self, label: str | None = None) -> set[int]:
        """Every process seen (of one kind): a new worker pid means one died."""
        return {
            pid
            for _, procs in self.samples
            for pid, (name, _) in procs.items()
            if label is None or name == label
        }


def summary(outcomes: list[Outcome]) -> str:
    """Counts by channel, attack class and result, one line each."""
    counts = Counter((o.channel, o.attack, o.result) for o in outcomes)
    width = max((len(a) for _, a, _ in counts), default=10)
    return "\n".join(
        f"  {channel:6s} {attack:{width}s} {result:24s} {n:5d}"
        for (channel, attack, result), n in sorted(counts.items())
    )
