"""Real peers for tests and benchmarks: ``radsight serve``, dcmtk ``storescp``, Orthanc.

Each starts a real process on free localhost ports and stops it again; nothing here is
a fake. Used by ``tests/`` and ``bench/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: dcmtk's tools; pynetdicom installs its own storescu/storescp/echoscu into the venv,
#: which would shadow them on PATH
DCMTK_BIN = Path(os.environ.get("RADSIGHT_DCMTK_BIN", "/usr/bin"))


def dcmtk(tool: str) -> str:
    path = DCMTK_BIN / tool
    if not path.exists():
        raise FileNotFoundError(f"dcmtk's {tool} is not at {path}: apt-get install dcmtk")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if predicate():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready after {timeout} s")


def _limit_memory(mb: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mb * 1024 * 1024, mb * 1024 * 1024))

    return apply


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class RadsightProcess:
    """``radsight serve`` as a child process with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        dicom_port: int | None = None,
        http_port: int | None = None,
        memory_limit_mb: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        #: address-space cap (``prlimit --as``) of the server and every process it starts,
        #: so that a test that attacks it cannot take the machine down
        self.memory_limit_mb = memory_limit_mb
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.workers = workers
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.celery_workers: list[subprocess.Popen] = []
        self.log_path = self.data_dir / "serve.log"
        self._admin_token: str | None = None

    @property
    def https(self) -> bool:
        return bool(self.extra_env.get("RADSIGHT_HTTPS_CERT"))

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADSIGHT_")}
        env.update(
            RADSIGHT_DATA_DIR=str(self.data_dir),
            RADSIGHT_DICOM_PORT=str(self.dicom_port),
            RADSIGHT_HTTP_PORT=str(self.http_port),
            RADSIGHT_WORKERS=str(self.workers),
            RADSIGHT_LOG_FORMAT="text",
        )
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``radsight ARGS`` against this server's data directory."""
        res = subprocess.run(
            [sys.executable, "-m", "radsight.cli.main", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"radsight {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def start(self, timeout: float = 60) -> RadsightProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radsight.cli.main", "serve"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_limit_memory(self.memory_limit_mb) if self.memory_limit_mb else None,
        )
        # HTTPS (perhaps with client certificates): the test's client checks it; wait for the port
        _wait(
            lambda: (
                port_open(self.http_port)
                if self.https
                else httpx.get(self.url + "/health", timeout=1).status_code == 200
            ),
            timeout,
            "radsight serve",
            self.proc,
        )
        _wait(lambda: port_open(self.dicom_port), timeout, "radsight DICOM port", self.proc)
        return self

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen:
        """A ``radsight worker`` (Celery) on the same database, files and broker."""
        log = open(self.data_dir / "worker.log", "a")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "radsight.cli.main", "worker", f"--concurrency={concurrency}"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.celery_workers.append(proc)
        return proc

    def stop(self) -> None:
        for worker in self.celery_workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """``kill -9`` the whole process tree (server and its workers)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def make_token(self, role: str = "admin", *args: str, name: str = "tests") -> str:
        """A new API token made with ``radsight token add`` (e.g. ``--org``, ``--user``)."""
        res = self.cli("token", "add", "--name", name, "--role", role, *args)
        return res.stdout.strip().splitlines()[-1]

    @property
    def admin_token(self) -> str:
        """A platform admin token for this server's database, made once."""
        if self._admin_token is None:
            self._admin_token = self.make_token("admin", name="tests-admin")
        return self._admin_token

    def http(self, token: str | None = None) -> httpx.Client:
        """An HTTP client that authenticates with ``token`` (default: an admin token)."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)


class Storescp:
    """dcmtk ``storescp`` writing every received object into ``out_dir``."""

    def __init__(
        self,
        out_dir: Path,
        ae_title: str = "STORESCP",
        port: int | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.extra = extra or []  # more storescp options, e.g. ["+xa"] (every syntax)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Storescp:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                dcmtk("storescp"),
                "--aetitle",
                self.ae_title,
                "--output-directory",
                str(self.out_dir),
                "--sort-on-study-uid",
                "st",
                *self.extra,
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: port_open(self.port), 20, "storescp", self.proc)
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.out_dir.rglob("*") if p.is_file())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Orthanc:
    """The Debian Orthanc server as a peer PACS, with its own storage folder."""

    def __init__(self, work_dir: Path, ae_title: str = "ORTHANC", **config: object) -> None:
        self.work_dir = Path(work_dir)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = config
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "radsight-test-peer",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            **self.config,
        }
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(cfg, indent=2))
        log = open(self.work_dir / "orthanc.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT)
        _wait(
            lambda: httpx.get(self.url + "/system", timeout=1).status_code == 200,
            30,
            "Orthanc",
            self.proc,
        )
        _wait(lambda: port_open(self.dicom_port), 30, "Orthanc DICOM port", self.proc)
        return self

    def get(self, path: str) -> object:
        return httpx.get(self.url + path, timeout=30).json()

    def get_bytes(self, path: str) -> bytes:
        return httpx.get(self.url + path, timeout=30).content

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class S3Server:
    """An S3-compatible server on localhost, spoken to over real HTTP by boto3.

    moto's standalone server (``moto.server.ThreadedMotoServer``, in this process's
    threads): no MinIO or Ceph RGW is installable from Debian or PyPI here. ``stop()`` is an
    outage; ``start()`` again on the same port brings back the objects it held.
    """

    access_key_id = "radsight-test"
    secret_access_key = "radsight-test-secret"

    def __init__(self, bucket: str = "radsight", port: int | None = None) -> None:
        self.bucket = bucket
        self.port = port or free_port()
        self._server: object = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer  # a test dependency only

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server
        if self.bucket not in {b["Name"] for b in self.client().list_buckets()["Buckets"]}:
            self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def env(self, prefix: str = "radsight") -> dict[str, str]:
        """The settings that put a ``radsight`` process's objects on this server."""
        return {
            "RADSIGHT_OBJECT_STORE": f"s3://{self.bucket}/{prefix}".rstrip("/"),
            "RADSIGHT_S3_ENDPOINT_URL": self.endpoint_url,
            "RADSIGHT_S3_ACCESS_KEY_ID": self.access_key_id,
            "RADSIGHT_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2")
        return [
            o["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]


def storescu(
    port: int,
    files: list[Path] | Path,
    *,
    calling: str,
    called: str = "RADSIGHT",
    extra: list[str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """dcmtk ``storescu`` sending files (or a folder, recursively) in one association."""
    paths = [files] if isinstance(files, Path) else list(files)
    args = [
        dcmtk("storescu"),
        "-aet",
        calling,
        "-aec",
        called,
        "--scan-directories",
        "--recurse",
        *(extra or []),
        "127.0.0.1",
        str(port),
        *map(str, paths),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def echoscu(port: int, *, calling: str, called: str = "RADSIGHT") -> subprocess.CompletedProcess:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
