"""``radsight serve``: DICOM listener, HTTP server, assembler and workers in one process tree."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from radsight.algorithms.registry import Registry
from radsight.config import Settings
from radsight.errors import ConfigError
from radsight.ingest.dimse import CallerDirectory, start_listener
from radsight.monitor import admission, alerting
from radsight.monitor.admission import SYSTEM
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.routing import RuleSet, load_rules
from radsight.pipeline.rules_reload import RulesCheck, RulesWatcher
from radsight.pipeline.runner import WorkerPool, reap_expired
from radsight.runtime import Runtime
from radsight.store import quality
from radsight.store.people import record_audit
from radsight.web import create_app

log = logging.getLogger(__name__)


@dataclass
class Server:
    settings: Settings
    rt: Runtime
    registry: Registry
    rules: RuleSet
    dicom_port: int = 0
    http_port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _dicom: object = None
    _pool: WorkerPool | None = None
    _dispatcher: Any = None
    _uvicorn: uvicorn.Server | None = None
    _app: Any = None
    _rules_watcher: RulesWatcher | None = None

    @classmethod
    def prepare(cls, settings: Settings) -> Server:
        """Open the store, migrate, load algorithms and rules: fail fast before listening."""
        _https_options(settings)  # certificate files that are missing fail here
        rt = Runtime.open(settings)
        registry = Registry.from_entry_points()
        rules = load_rules(settings.routing_rules, known_algorithms=registry.refs())
        return cls(settings=settings, rt=rt, registry=registry, rules=rules)

    def start(self) -> None:
        reaped = reap_expired(self.rt)
        if reaped:
            log.info("requeued %d jobs left running by a previous run", reaped)
        _check_port_free(self.settings.http_host, self.settings.http_port, "RADSIGHT_HTTP_PORT")
        callers = CallerDirectory(self.rt)
        try:
            _ae, self._dicom = start_listener(self.rt, callers)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for DICOM on {self.settings.dicom_host}:"
                f"{self.settings.dicom_port}: {exc.strerror} (set RADSIGHT_DICOM_PORT)"
            ) from exc
        self.dicom_port = self._dicom.server_address[1]  # type: ignore[attr-defined]
        # every installed version without a lifecycle state gets its first one (approved
        # when its shipped evidence passes the acceptance rule, else shadow or registered)
        # before anything is routed; not in prepare(): a server that refuses to start
        # (a port taken) records nothing
        admission.register_installed(self.rt, self.registry)
        if self.settings.job_runner == "celery":
            from radsight.pipeline.celery_runner import Dispatcher

            self._dispatcher = Dispatcher(self.settings)
        elif self.settings.workers:
            self._pool = WorkerPool(self.settings, self.rt, self.settings.workers)
            self._pool.start()
        t = threading.Thread(target=self._scheduler, name="radsight-scheduler", daemon=True)
        t.start()
        self._threads.append(t)
        if self.settings.monitor_interval_s:
            t = threading.Thread(target=self._monitor, name="radsight-monitor", daemon=True)
            t.start()
            self._threads.append(t)
        app = create_app(self.rt, self.registry, self.rules)
        app.state.dicom_port = self.dicom_port
        self._app = app
        self._watch_rules()
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            **_proxy_options(self.settings),
            **_https_options(self.settings),
        )
        self._uvicorn = uvicorn.Server(config)
        log.info(
            "radsight %s: DICOM %s on port %d, %s on port %d, rules %s (%s), %d workers, "
            "data in %s",
            self.settings.ae_title,
            "listener",
            self.dicom_port,
            "HTTPS" if self.settings.https_cert else "HTTP",
            self.settings.http_port,
            self.rules.version,
            self.rules.digest,
            self.settings.workers,
            self.settings.data_dir,
        )

    def run_http(self) -> None:
        """Serve HTTP in the calling thread until SIGINT/SIGTERM, then stop everything."""
        assert self._uvicorn is not None
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler that was
        # there before; make that handler unwind the stack so the finally below runs
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self._uvicorn.run()
        finally:
            self.stop()

    def _scheduler(self) -> None:
        last_reap = last_rules = 0.0
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                if (
                    self._rules_watcher is not None
                    and time.monotonic() - last_rules >= self.settings.rules_reload_interval_s
                ):
                    last_rules = time.monotonic()
                    self.reload_rules()
                # the rules of this tick: a reload swaps the reference, never edits it
                assemble_once(self.rt, self.registry, self.rules)
                if self._dispatcher is not None:
                    self._dispatcher.dispatch(self.rt)
                if self._pool is not None:
                    self._pool.supervise()
                if time.monotonic() - last_reap > 2.0:
                    reap_expired(self.rt)
                    last_reap = time.monotonic()
            except Exception:  # the scheduler loop's catch-all: log once and keep going
                log.exception("scheduler tick failed")

    def _watch_rules(self) -> None:
        """Watch the rules file (a rules file is set and ``rules_reload_interval_s`` > 0);
        the rules in force at start-up are valid, so a configuration alert left open by an
        earlier run is resolved."""
        path = self.settings.routing_rules
        if path is None:
            return  # the built-in rules: nothing to watch
        with self.rt.db.session() as s:
            quality.resolve_open_alert(s, _rules_alert_key(path))
        if self.settings.rules_reload_interval_s > 0:
            self._rules_watcher = RulesWatcher(path, self.rules, self.registry.refs())

    def reload_rules(self) -> RulesCheck | None:
        """Look at the rules file; swap in its rules when they changed and are valid,
        raise a ``configuration`` alert (and keep the rules in force) when they are not."""
        watcher = self._rules_watcher
        if watcher is None:
            return None
        check = watcher.check()
        key = _rules_alert_key(watcher.path)
        if check.outcome == "reloaded":
            old = check.previous
            self.rules = check.rules
            if self._app is not None:
                self._app.state.rules = check.rules
            log.info("routing rules reloaded: version %s (%s)", check.rules.version, check.digest)
            with self.rt.db.session() as s:
                record_audit(
                    s,
                    SYSTEM,
                    "routing_rules.reload",
                    detail={
                        "path": str(watcher.path),
                        "version": check.rules.version,
                        "digest": check.rules.digest,
                        "previous_version": old.version if old else "",
                        "previous_digest": old.digest if old else "",
                    },
                )
        if check.outcome in ("reloaded", "restored"):
            with self.rt.db.session() as s:
                if quality.resolve_open_alert(s, key):
                    log.info(
                        "routing rules %s load again: configuration alert resolved", watcher.path
                    )
        elif check.outcome == "invalid":
            log.error(
                "routing rules %s not reloaded, the rules in force stay (version %s, %s): %s",
                watcher.path,
                self.rules.version,
                self.rules.digest,
                check.error,
            )
            message = (
                f"routing rules {watcher.path} not loaded: {check.error}. The rules in force "
                f"stay: version {self.rules.version} ({self.rules.digest})"
            )
            detail = {
                "path": str(watcher.path),
                "error": check.error,
                "rules_version": self.rules.version,
                "rules_digest": self.rules.digest,
            }
            with self.rt.db.session() as s:
                row, new = alerting.raise_alert(
                    self.rt,
                    s,
                    kind="configuration",
                    severity="critical",
                    key=key,
                    message=message,
                    detail=detail,
                )
                if not new:  # broken again, differently: say how
                    quality.amend_alert(
                        s,
                        row,
                        message=message,
                        detail=detail,
                        webhook=bool(self.settings.alert_webhook_url),
                    )
            if self.settings.alert_webhook_url:  # not on the assembler's time
                threading.Thread(
                    target=alerting.send_pending_webhooks,
                    args=(self.rt,),
                    name="radsight-rules-alert",
                    daemon=True,
                ).start()
        return check

    def _monitor(self) -> None:
        """Quality checks (docs/quality.md) on their own thread: a slow webhook or a big
        technical report must not hold up assembly."""
        from radsight.monitor.checks import run_checks

        while not self._stop.wait(self.settings.monitor_interval_s):
            try:
                summary = run_checks(self.rt, self.registry)
                if summary["raised"] or summary["resolved"]:
                    log.info(
                        "monitoring pass: %d alerts raised, %d resolved",
                        len(summary["raised"]),
                        summary["resolved"],
                    )
            except Exception:  # the monitor loop's catch-all: log once and keep going
                log.exception("monitoring pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._dicom is not None:
            self._dicom.shutdown()  # type: ignore[attr-defined]
            self._dicom = None
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        for t in self._threads:
            t.join(5)
        self.rt.close()
        log.info("radsight stopped")


def _rules_alert_key(path: Path) -> str:
    return f"configuration:routing_rules:{path}"[:255]


def _check_port_free(host: str, port: int, setting: str) -> None:
    """Fail before starting anything when the HTTP port is taken (uvicorn would exit late)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for HTTP on {host}:{port}: {exc.strerror} (set {setting})"
            ) from exc


def _proxy_options(settings: Settings) -> dict[str, Any]:
    """X-Forwarded-For/-Proto believed only from ``trusted_proxies`` (none by default): any
    other client could name any address, escape the per-address sign-in throttle and
    write a forged address into the audit trail."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


def _https_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options: HTTPS with ``https_cert``/``https_key``, and client
    certificates signed by ``https_client_ca`` required (mutual TLS) when that is set."""
    if settings.https_cert is None:
        return {}
    for name in ("https_cert", "https_key", "https_client_ca"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"RADSIGHT_{name.upper()}: {path} is not a readable file")
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.https_cert),
        "ssl_keyfile": str(settings.https_key),
    }
    if settings.https_client_ca is not None:
        options["ssl_ca_certs"] = str(settings.https_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
