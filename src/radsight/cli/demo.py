"""``radsight demo``: the whole loop on one machine, in a minute.

1. starts ``radsight serve`` (a child process) on free ports with a fresh data directory;
2. starts a small PACS (a C-STORE SCP) that writes what it receives into OUT;
3. makes an admin token (``radsight token add``) and registers a demo organisation, its
   AE title and the PACS as destination (HTTP API);
4. sends generated chest radiographs with a DICOM client (C-STORE);
5. waits for the SR and SC results to arrive at the PACS and prints a summary.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import httpx
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from radsight.dicom.synthetic import make_radiograph
from radsight.dicom.uids import PREFIX

DEMO_AE = "DEMO_MODALITY"
PACS_AE = "DEMO_PACS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MiniPacs:
    """A C-STORE SCP that writes every received object to ``out_dir/<modality>/<uid>.dcm``."""

    def __init__(self, out_dir: Path, port: int, ae_title: str = PACS_AE) -> None:
        self.out_dir = out_dir
        self.port = port
        self.received: list[Path] = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.server: ThreadedAssociationServer | None = None

    def _store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        folder = self.out_dir / str(ds.Modality)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            self.received.append(path)
        return 0x0000

    def start(self) -> None:
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def send_studies(port: int, datasets: list, called_ae: str = "RADSIGHT") -> int:
    ae = AE(ae_title=DEMO_AE)
    ae.add_requested_context(datasets[0].SOPClassUID, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise click.ClickException("Radsight refused the association")
    ok = 0
    for ds in datasets:
        status = assoc.send_c_store(ds)
        ok += int(getattr(status, "Status", 0xFFFF) == 0)
    assoc.release()
    return ok


def run_demo(out_dir: Path, n_studies: int, timeout: float) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="radsight-demo-"))
    dicom_port, http_port, pacs_port = free_port(), free_port(), free_port()
    # generated images are not chest radiographs a model could read: the demo routes them to
    # the deterministic test algorithm, which marks each image's brightest region
    rules = data_dir / "demo-rules.yaml"
    rules.write_text(
        'version: "demo"\nrules:\n  - name: everything\n    match: {}\n'
        "    algorithms: [radsight-bright-region]\n"
    )
    env = dict(
        {k: v for k, v in os.environ.items() if not k.startswith("RADSIGHT_")},
        RADSIGHT_ROUTING_RULES=str(rules),
        RADSIGHT_DATA_DIR=str(data_dir),
        RADSIGHT_DICOM_PORT=str(dicom_port),
        RADSIGHT_HTTP_PORT=str(http_port),
        RADSIGHT_WORKERS="1",
        RADSIGHT_LOG_LEVEL="WARNING",
    )
    log_path = out_dir / "radsight-serve.log"
    click.echo(f"starting radsight serve (DICOM {dicom_port}, HTTP {http_port}), data {data_dir}")
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "radsight.cli.main", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    pacs = MiniPacs(out_dir, pacs_port)
    pacs.start()
    base = f"http://127.0.0.1:{http_port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            _wait_healthy(http, proc, log_path)
            http.headers["Authorization"] = f"Bearer {_admin_token(env)}"
            http.post("/api/organisations", json={"name": "Demo Clinic", "region": "Demo Region"})
            http.post("/api/organisations/Demo Clinic/ae-titles", json={"ae_title": DEMO_AE})
            http.post(
                "/api/organisations/Demo Clinic/destinations",
                json={"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs_port},
            ).raise_for_status()
            datasets = []
            for i in range(n_studies):
                spot = [(0.3, 0.45, 0.1), (0.7, 0.4, 0.12), None][i % 3]
                datasets.append(
                    make_radiograph(
                        study_instance_uid=generate_uid(prefix=PREFIX),
                        patient_id=f"DEMO-{i + 1:04d}",
                        bright_spot=spot,
                        seed=i,
                    )
                )
            sent = send_studies(dicom_port, datasets)
            click.echo(f"sent {sent}/{len(datasets)} instances with C-STORE as {DEMO_AE}")
            uids = {str(d.StudyInstanceUID) for d in datasets}
            results = _wait_results(http, uids, timeout)
        expected_sc = len(datasets)
        got_sr = len(list((out_dir / "SR").glob("*.dcm"))) if (out_dir / "SR").exists() else 0
        got_sc = len(list((out_dir / "OT").glob("*.dcm"))) if (out_dir / "OT").exists() else 0
        click.echo("")
        click.echo(f"{'study':<66} {'state':<10} {'verdict':<9} score")
        for uid, res in sorted(results.items()):
            click.echo(f"{uid:<66} {res['state']:<10} {res['verdict']:<9} {res['score']}")
        click.echo("")
        click.echo(f"the PACS received {got_sr} SR and {got_sc} SC objects in {out_dir}")
        ok = got_sr == len(datasets) and got_sc == expected_sc and sent == len(datasets)
        click.echo("demo " + ("passed" if ok else "FAILED: see " + str(log_path)))
        return 0 if ok else 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        pacs.stop()


def _admin_token(env: dict[str, str]) -> str:
    """A platform admin token for the demo server (what an operator makes with the CLI)."""
    res = subprocess.run(
        [sys.executable, "-m", "radsight.cli.main", "token", "add", "--name", "demo"]
        + ["--role", "admin", "--days", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise click.ClickException(f"could not make a token: {res.stderr.strip()}")
    return res.stdout.strip().splitlines()[-1]


def _wait_healthy(http: httpx.Client, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"radsight serve exited; see {log_path}")
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise click.ClickException("radsight serve did not become healthy in 60 s")


def _wait_results(http: httpx.Client, uids: set[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    results: dict[str, dict] = {}
    with click.progressbar(length=len(uids), label="waiting for results") as bar:
        while time.monotonic() < deadline:
            studies = http.get("/api/studies", params={"limit": 1000}).json()
            done = {}
            for st in studies:
                if st["study_instance_uid"] not in uids:
                    continue
                detail = http.get(f"/api/studies/{st['id']}").json()
                deliveries = [j for j in detail["jobs"] if j["kind"] == "deliver"]
                finished = st["state"] == "not_analysed" or (
                    st["state"] == "analysed"
                    and deliveries
                    and all(j["state"] in ("done", "failed", "dead") for j in deliveries)
                )
                if finished:
                    res = detail["results"][0] if detail["results"] else {}
                    done[st["study_instance_uid"]] = {
                        "state": st["state"],
                        "verdict": res.get("verdict", ""),
                        "score": f"{res['study_score']:.3f}" if res.get("study_score") else "-",
                    }
            bar.update(len(done) - len(results))
            results = done
            if len(results) == len(uids):
                break
            time.sleep(0.5)
    return results
