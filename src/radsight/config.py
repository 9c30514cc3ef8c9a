"""Settings: one object, built once at start-up from ``RADSIGHT_*`` variables or a TOML file.

Precedence: explicit arguments > environment variables > TOML file (``RADSIGHT_CONFIG``
or ``--config``) > defaults. Invalid values fail fast with a message naming the setting.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from radsight.errors import ConfigError

#: RADSIGHT_* variables that are not settings: the config file path, and tools' own
NOT_SETTINGS = {"config", "dcmtk_bin", "shared_data", "xrv_model_dir"}
DEFAULT_QUIET_PERIODS = {"cxr": 2.0, "flg": 2.0, "mmg": 3.0, "ct-chest": 5.0, "ct-brain": 5.0}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADSIGHT_", extra="forbid")

    data_dir: Path = Field(Path("radsight-data"), description="instance files, results, database")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in data_dir")
    dicom_port: int = Field(11112, ge=0, le=65535)
    dicom_host: str = "0.0.0.0"
    ae_title: str = Field("RADSIGHT", min_length=1, max_length=16)
    http_port: int = Field(8042, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    #: a web session ends this long after sign-in, or after this long without a request
    session_lifetime_s: float = Field(12 * 3600.0, gt=0)
    session_idle_s: float = Field(30 * 60.0, gt=0)
    #: send session cookies only over HTTPS (turn on behind a TLS-terminating proxy)
    secure_cookies: bool = False
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

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        v = v.strip()
        if not v or not all(32 <= ord(c) < 127 and c != "\\" for c in v):
            raise ValueError("AE title must be 1-16 printable ASCII characters, no backslash")
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

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'radsight.db').resolve()}"

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
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"RADSIGHT_{name.upper()}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from exc
