"""Settings: one object, built once at start-up from ``RADSIGHT_*`` variables or a TOML file.

Precedence: explicit arguments > environment variables > TOML file (``RADSIGHT_CONFIG``
or ``--config``) > defaults. Invalid values fail fast with a message naming the setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from radsight.errors import ConfigError

#: RADSIGHT_* variables that are not settings: the config file path, and tools' own
NOT_SETTINGS = {"config", "dcmtk_bin", "shared_data", "xrv_model_dir"}
#: decode limits (settings max_frame_pixels, max_instance_pixels, max_render_pixels); the
#: decoders in radsight.dicom take them as required arguments, so these are their one home
DEFAULT_MAX_FRAME_PIXELS = 200_000_000
#: 1.5 x 10^9 pixels admits the largest real objects: a high-resolution breast
#: tomosynthesis (about 100 slices of 4096 x 3328, 1.4 x 10^9) and a 1000-slice enhanced
#: CT (1000 x 512 x 512, 0.26 x 10^9); a decoded instance is at most 3 GB of 16-bit pixels
DEFAULT_MAX_INSTANCE_PIXELS = 1_500_000_000
DEFAULT_MAX_RENDER_PIXELS = 4096 * 4096
DEFAULT_QUIET_PERIODS = {"cxr": 2.0, "flg": 2.0, "mmg": 3.0, "ct-chest": 5.0, "ct-brain": 5.0}
#: S3 bucket names (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADSIGHT_", extra="forbid")

    data_dir: Path = Field(Path("radsight-data"), description="instance files, results, database")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in data_dir")
    dicom_port: int = Field(11112, ge=0, le=65535)
    #: loopback by default: set the address (or 0.0.0.0) modalities reach it at
    dicom_host: str = "127.0.0.1"
    ae_title: str = Field("RADSIGHT", min_length=1, max_length=16)
    http_port: int = Field(8042, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    #: a web session ends this long after sign-in, or after this long without a request
    session_lifetime_s: float = Field(12 * 3600.0, gt=0)
    session_idle_s: float = Field(30 * 60.0, gt=0)
    #: send session cookies only over HTTPS: unset is on when Radsight serves HTTPS itself
    #: (https_cert); turn it on behind a TLS-terminating proxy
    secure_cookies: bool | None = None
    #: the URL clients reach the HTTP server at (behind a proxy: "https://pacs.example.org");
    #: DICOMweb RetrieveURL and BulkDataURI values start with it. Empty: from each request
    public_url: str = Field("", pattern=r"^(https?://[^\s]+)?$")
    #: reverse proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto are
    #: believed; empty: none, the client address is the connection's peer
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: worker processes started by ``radsight serve`` (0: none, e.g. for gateways)
    workers: int = Field(2, ge=0, le=64)
    #: embedded: serve's own worker processes poll the database; celery: gateways send
    #: due jobs over the broker to ``radsight worker`` processes (docs/operations.md)
    job_runner: str = Field("embedded", pattern="^(embedded|celery)$")
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    #: a queued job whose message was sent this long ago is sent again (lost messages)
    redispatch_s: float = Field(60.0, gt=0)
    #: seconds of silence after the last instance before a study is ready, per study type
    quiet_periods: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_QUIET_PERIODS))
    default_quiet_period: float = Field(3.0, gt=0)
    routing_rules: Path | None = Field(None, description="YAML rules; default: built-in")
    job_max_attempts: int = Field(5, ge=1, le=100)
    job_backoff_s: float = Field(2.0, ge=0)
    job_backoff_max_s: float = Field(300.0, ge=0)
    delivery_max_attempts: int = Field(8, ge=1, le=1000)
    #: a worker's claim on a job expires this long after its last heartbeat
    job_lease_s: float = Field(15.0, gt=1)
    poll_interval_s: float = Field(0.2, gt=0)
    dimse_timeout_s: float = Field(30.0, gt=0)
    log_format: str = Field("text", pattern="^(text|json)$")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    #: skip fsync of instance files: faster, but an acknowledged instance may be lost
    #: on power failure. Only for throwaway demos and benchmarks.
    unsafe_no_fsync: bool = False
    #: where instance files and results live (docs/scale-out.md#object-storage): empty for
    #: ``<data_dir>/objects``, a directory every process sees, or ``s3://bucket[/prefix]``
    object_store: str = ""
    #: S3 only: the service's URL (MinIO, Ceph RGW, ...); empty for AWS itself
    s3_endpoint_url: str = ""
    #: S3 only: empty for the AWS default chain (AWS_REGION, ~/.aws/config)
    s3_region: str = ""
    #: S3 only: both, or neither for the AWS default chain (environment, ~/.aws, a role)
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    #: S3 only: "auto" is "path" with an endpoint URL (what MinIO expects), else virtual
    s3_addressing_style: str = Field("auto", pattern="^(auto|path|virtual)$")
    #: S3 only: seconds to connect and to wait for each response, and tries per request
    s3_timeout_s: float = Field(5.0, gt=0)
    s3_max_attempts: int = Field(3, ge=1, le=20)
    # --- quality monitoring (docs/quality.md) ---
    #: calibration test acceptance bars; warnings below the Moscow rule's set size / balance
    acceptance_min_auroc: float = Field(0.81, ge=0, le=1)
    acceptance_min_studies: int = Field(400, ge=1)
    acceptance_min_class_fraction: float = Field(0.10, ge=0, le=0.5)
    #: the approval bar may also need localisation: the share of positives whose top mark
    #: falls inside a reference region (unset: not required)
    acceptance_min_pointing_game: float | None = Field(None, ge=0, le=1)
    # --- admission (docs/quality.md, "Admission") ---
    #: suspend an approved version for an organisation when a calibration test of it (for
    #: that organisation, or platform-wide) fails conclusively: the AUROC's whole 95 % CI
    #: below the bar
    auto_suspend_on_calibration: bool = True
    #: the same for a critical clinical-monitoring alert (a figure's whole CI below its bar)
    auto_suspend_on_clinical: bool = False
    #: seconds between checks of the routing rules file for changes (0: never reload)
    rules_reload_interval_s: float = Field(2.0, ge=0)
    #: clinical monitoring: a figure alerts when its whole 95 % CI lies below its bar
    clinical_bars: dict[str, float] = Field(
        default_factory=lambda: {"sensitivity": 0.80, "specificity": 0.70, "agreement": 0.75}
    )
    clinical_window_days: float = Field(30.0, gt=0)
    #: drift: alert when a feature's PSI reaches this (and, for numbers, KS p < drift_ks_p)
    drift_psi_alert: float = Field(0.25, gt=0)
    drift_ks_p: float = Field(0.01, gt=0, lt=1)
    drift_window_days: float = Field(7.0, gt=0)
    drift_min_studies: int = Field(100, ge=10)
    #: received -> delivered budget per study; slower studies count as time-limit breaches
    turnaround_budget_s: float = Field(300.0, gt=0)
    #: seconds between quality-monitoring passes in ``radsight serve`` (0: none; with
    #: several gateways let one of them run it, docs/quality.md)
    monitor_interval_s: float = Field(300.0, ge=0)
    #: alerts are POSTed as JSON here (empty: log and dashboard only)
    alert_webhook_url: str = ""
    alert_webhook_attempts: int = Field(3, ge=1, le=20)
    alert_webhook_timeout_s: float = Field(5.0, gt=0)
    #: bearer token Prometheus sends to GET /metrics (empty: any signed-in principal)
    metrics_token: SecretStr = SecretStr("")

    # --- limits and security (docs/security.md) ---
    #: largest PDU Radsight receives (advertised in the association); a PDU that declares
    #: more is aborted before it is read
    dicom_max_pdu_bytes: int = Field(262_144, ge=4096, le=64 * 1024 * 1024)
    #: associations at once, in all and from one source address
    dicom_max_associations: int = Field(32, ge=1, le=1024)
    dicom_max_associations_per_peer: int = Field(8, ge=1, le=1024)
    #: a connection that has not completed its association request within this is closed
    dicom_handshake_timeout_s: float = Field(5.0, gt=0)
    #: an association that sends nothing for this long is aborted
    dicom_idle_timeout_s: float = Field(30.0, gt=0)
    #: refuse associations whose called AE title is not ``ae_title`` (Orthanc's
    #: DicomCheckCalledAet)
    dicom_strict_called_ae: bool = False
    #: unregistered callers: one rejection row per (AE title, address) per this interval,
    #: counting the attempts
    rejection_record_interval_s: float = Field(60.0, ge=0)
    #: DICOM TLS (PS3.15 B.1): PEM certificate and key; with a CA file, callers must
    #: present a certificate it signed
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None
    #: size limits: one instance (any entry), one HTTP request body (STOW, upload), one
    #: member and the whole of an imported archive, the archive's compression ratio
    max_instance_bytes: int = Field(1024**3, ge=1024)
    max_request_bytes: int = Field(4 * 1024**3, ge=1024)
    #: one HTTP request body of any other route (a form, a JSON body), chunked or not
    max_form_bytes: int = Field(1024**2, ge=1024)
    max_import_total_bytes: int = Field(64 * 1024**3, ge=1024)
    max_import_compression_ratio: float = Field(200.0, gt=1)
    #: how deep sequences may nest in an incoming data set (real SRs and RT objects: < 10);
    #: at most 100, what every read route (WADO-RS metadata, jobs) can walk
    max_sequence_depth: int = Field(32, ge=1, le=100)
    #: a STOW-RS body past this many bytes is spooled to a file under <data_dir>/spool
    stow_spool_memory_bytes: int = Field(1024 * 1024, ge=0)
    #: values one QIDO-RS key may list (StudyInstanceUID=a,b,...)
    max_query_values: int = Field(100, ge=1, le=10_000)
    #: pixels of one decoded frame (rows x columns x samples), checked against the
    #: codestream before decoding; of a whole instance (x frames); and the largest image
    #: the viewer may ask to render
    max_frame_pixels: int = Field(DEFAULT_MAX_FRAME_PIXELS, ge=1024)
    max_instance_pixels: int = Field(DEFAULT_MAX_INSTANCE_PIXELS, ge=1024)
    max_render_pixels: int = Field(DEFAULT_MAX_RENDER_PIXELS, ge=1024)
    #: a worker process's memory ceiling (MiB, 0: none); a job past it fails, recorded
    worker_memory_limit_mb: int = Field(8192, ge=0)
    #: sign-in: failures per account within the window lock it for lockout_s (0: until an
    #: admin unlocks it); failures from one address within the window throttle the address
    signin_window_s: float = Field(900.0, gt=0)
    signin_max_failures_per_account: int = Field(5, ge=1)
    signin_max_failures_per_address: int = Field(20, ge=1)
    signin_lockout_s: float = Field(900.0, ge=0)
    #: password hashes computed at once (argon2 runs in threads, off the event loop)
    password_hash_concurrency: int = Field(2, ge=1, le=64)
    #: HTTPS: PEM certificate and key for the HTTP server
    https_cert: Path | None = None
    https_key: Path | None = None
    #: HTTPS with client certificates (mutual TLS): only clients whose certificate this
    #: PEM CA bundle signed may connect (systems; browsers then need a certificate too)
    https_client_ca: Path | None = None
    #: OpenID Connect single sign-on (empty issuer: off). Roles come from the claim
    #: ``oidc_roles_claim`` mapped through ``oidc_role_map`` (claim value -> role), the
    #: organisation from ``oidc_organisation_claim`` (an organisation's name)
    oidc_issuer: str = Field("", pattern=r"^(https?://[^\s]+)?$")
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_roles_claim: str = "roles"
    oidc_role_map: dict[str, str] = Field(default_factory=dict)
    oidc_organisation_claim: str = "organisation"
    #: the sign-in button reads "Sign in with <oidc_display_name>" (empty: the issuer's host)
    oidc_display_name: str = Field("", max_length=64)
    #: scopes asked for; "openid" is always sent
    oidc_scopes: str = "openid profile email"

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        v = v.strip()
        if not v or not all(32 <= ord(c) < 127 and c != "\\" for c in v):
            raise ValueError("AE title must be 1-16 printable ASCII characters, no backslash")
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, v: Any) -> Any:
        items = [p.strip() for p in v.split(",")] if isinstance(v, str) else v
        items = [p for p in items if p]
        for p in items:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise ValueError(f"{p!r} is not an IP address or network") from None
        return items

    @field_validator("oidc_role_map")
    @classmethod
    def _oidc_role_map(cls, v: dict[str, str]) -> dict[str, str]:
        roles = ("radiologist", "supervisor", "org_admin", "admin")
        bad = {k: r for k, r in v.items() if r not in roles}
        if bad:
            raise ValueError(f"roles must be one of {', '.join(roles)}; not {bad}")
        return v

    @field_validator("quiet_periods")
    @classmethod
    def _quiet(cls, v: dict[str, float]) -> dict[str, float]:
        merged = dict(DEFAULT_QUIET_PERIODS)
        for key, seconds in v.items():
            if seconds <= 0:
                raise ValueError(f"quiet period of {key!r} must be > 0 seconds")
            merged[key] = float(seconds)
        return merged

    @field_validator("object_store")
    @classmethod
    def _object_store(cls, v: str) -> str:
        v = v.strip()
        if "://" in v and not v.startswith(("s3://", "file://")):
            raise ValueError(f"{v!r}: give a directory, file:///path or s3://bucket[/prefix]")
        if v.startswith("s3://"):
            bucket = v[len("s3://") :].split("/", 1)[0]
            if not _BUCKET.fullmatch(bucket):
                raise ValueError(
                    f"{v!r}: {bucket!r} is not an S3 bucket name (3-63 characters: "
                    "lower-case letters, digits, dots and hyphens)"
                )
        if v.startswith("file://") and not v.startswith("file:///"):
            raise ValueError(f"{v!r}: a file URL needs an absolute path (file:///srv/objects)")
        return v

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, v: str) -> str:
        v = v.strip()
        if v and not re.fullmatch(r"https?://[^/\s]+/?", v):
            raise ValueError(f"{v!r}: give http(s)://host[:port], e.g. http://minio:9000")
        return v

    @model_validator(mode="after")
    def _s3_settings(self) -> Settings:
        used = [
            f"RADSIGHT_{name.upper()}"
            for name in ("s3_endpoint_url", "s3_region", "s3_access_key_id")
            if getattr(self, name)
        ] + (
            ["RADSIGHT_S3_SECRET_ACCESS_KEY"]
            if self.s3_secret_access_key.get_secret_value()
            else []
        )
        if used and not self.object_store.startswith("s3://"):
            raise ValueError(
                f"{', '.join(used)} set, but RADSIGHT_OBJECT_STORE is not an s3:// URL"
            )
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key.get_secret_value()):
            raise ValueError(
                "set RADSIGHT_S3_ACCESS_KEY_ID and RADSIGHT_S3_SECRET_ACCESS_KEY together, "
                "or neither (the AWS default credentials chain)"
            )
        return self

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        for cert, key in (("dicom_tls_cert", "dicom_tls_key"), ("https_cert", "https_key")):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ValueError(f"set RADSIGHT_{cert.upper()} and RADSIGHT_{key.upper()} together")
        if self.dicom_tls_ca is not None and self.dicom_tls_cert is None:
            raise ValueError("RADSIGHT_DICOM_TLS_CA needs RADSIGHT_DICOM_TLS_CERT and _KEY")
        if self.https_client_ca is not None and self.https_cert is None:
            raise ValueError("RADSIGHT_HTTPS_CLIENT_CA needs RADSIGHT_HTTPS_CERT and _KEY")
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("RADSIGHT_OIDC_ISSUER needs RADSIGHT_OIDC_CLIENT_ID")
        issuer = urlsplit(self.oidc_issuer)
        if issuer.scheme == "http" and issuer.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError(
                "RADSIGHT_OIDC_ISSUER must be an https:// URL (http:// only on loopback, "
                "for tests): the client secret and the ID tokens travel to and from it"
            )
        return self

    @property
    def cookies_secure(self) -> bool:
        """Session cookies carry Secure: as set, else whenever Radsight serves HTTPS."""
        return self.https_cert is not None if self.secure_cookies is None else self.secure_cookies

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'radsight.db').resolve()}"

    @property
    def resolved_object_store(self) -> str:
        """``s3://bucket[/prefix]``, or the absolute path of the objects directory."""
        v = self.object_store
        if v.startswith("s3://"):
            return v.rstrip("/")
        if v.startswith("file://"):
            v = v[len("file://") :]
        return str(Path(v).resolve() if v else (self.data_dir / "objects").resolve())

    def quiet_period(self, study_type: str) -> float:
        return self.quiet_periods.get(study_type, self.default_quiet_period)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise :class:`ConfigError` with every problem listed."""
    file_values: dict[str, Any] = {}
    path = config_file or os.environ.get("RADSIGHT_CONFIG")
    if path:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        file_values = raw.get("radsight", raw)
    env_keys = {
        k[len("RADSIGHT_") :].lower() for k in os.environ if k.startswith("RADSIGHT_")
    } - NOT_SETTINGS
    unknown = sorted(env_keys - set(Settings.model_fields))
    if unknown:
        names = ", ".join(f"RADSIGHT_{k.upper()}" for k in unknown)
        raise ConfigError(
            f"unknown setting(s) {names}; known: "
            + ", ".join(f"RADSIGHT_{k.upper()}" for k in Settings.model_fields)
        )
    values = {k: v for k, v in file_values.items() if k not in env_keys}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except SettingsError as exc:  # a complex value (quiet_periods) that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"RADSIGHT_{field.group(1).upper()}" if field else "a RADSIGHT_ variable"
        raise ConfigError(
            f"invalid settings:\n  {name}: not valid JSON "
            """(for example RADSIGHT_QUIET_PERIODS='{"cxr": 1.5, "ct-chest": 4}')"""
        ) from exc
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            # a check across settings names them in its own message
            lines.append(
                f"RADSIGHT_{name.upper()}: {err['msg']}"
                if name
                else err["msg"].removeprefix("Value error, ")
            )
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from exc
