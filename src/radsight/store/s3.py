"""Object storage on an S3-compatible service (AWS S3, MinIO, Ceph RGW) through boto3.

The keys are those of :class:`radsight.store.files.DirectoryStore`, under the prefix of
the ``object_store`` URL: ``s3://bucket/radsight`` keeps ``instances/1/<study>/...`` as
the object ``radsight/instances/1/<study>/...`` in ``bucket``.

A put is durable when it returns: S3's PutObject answers 200 only once the service has
stored the whole object, and reads after that see it (strong read-after-write
consistency). Each put carries the bytes' MD5 (``Content-MD5``), so the service refuses a
body changed on the way (``BadDigest``) rather than storing it, and the SHA-256 as
metadata (``x-amz-meta-sha256``). Only then is the row committed and the sender told
"success".

Every botocore error becomes a :class:`radsight.errors.StorageError` here, the one place
that knows boto3; a C-STORE then answers "out of resources" (0xA700) and a job is retried.
Requests time out after ``s3_timeout_s`` and are tried ``s3_max_attempts`` times
(botocore's "standard" retry mode, with backoff).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from radsight.errors import ConfigError, StorageError
from radsight.store.files import check_key

if TYPE_CHECKING:
    from radsight.config import Settings

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        addressing_style: str = "auto",
        timeout_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url.rstrip("/")
        if addressing_style == "auto" and self.endpoint_url:
            addressing_style = "path"  # MinIO and most S3-compatible services expect it
        self._session_args = {
            k: v
            for k, v in {
                "region_name": region or ("us-east-1" if self.endpoint_url else ""),
                "aws_access_key_id": access_key_id,
                "aws_secret_access_key": secret_access_key,
            }.items()
            if v
        }
        self._config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=32,  # one per DICOM association the listener allows
            s3={"addressing_style": addressing_style},
            # Content-MD5 is what every S3-compatible service checks; newer boto3 would
            # add CRC32 trailers by default, which some of them refuse
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._lock = threading.Lock()
        self._client_obj: Any = None
        self._client_pid = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        bucket, _, prefix = settings.resolved_object_store[len("s3://") :].partition("/")
        return cls(
            bucket,
            prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            addressing_style=settings.s3_addressing_style,
            timeout_s=settings.s3_timeout_s,
            max_attempts=settings.s3_max_attempts,
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Store({self.url}{at})"

    def _client(self) -> Any:
        # one client per process: its connection pool does not survive a fork
        with self._lock:
            if self._client_obj is None or self._client_pid != os.getpid():
                session = boto3.session.Session(**self._session_args)
                self._client_obj = session.client(
                    "s3", endpoint_url=self.endpoint_url or None, config=self._config
                )
                self._client_pid = os.getpid()
            return self._client_obj

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        """Fail fast at start-up when the bucket cannot be used."""
        try:
            self._client().head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING or code == "NoSuchBucket":
                raise ConfigError(
                    f"object store {self.url}: bucket {self.bucket!r} does not exist "
                    "(create it, or fix RADSIGHT_OBJECT_STORE)"
                ) from exc
            raise ConfigError(
                f"object store {self.url}: {_reason(exc)} (check the credentials and "
                "RADSIGHT_S3_REGION)"
            ) from exc
        except BotoCoreError as exc:
            raise ConfigError(
                f"object store {self.url} is not reachable: {exc} (RADSIGHT_S3_ENDPOINT_URL)"
            ) from exc

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; return its SHA-256 once S3 has stored it."""
        name = self._name(key)
        sha256 = hashlib.sha256(data).hexdigest()
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        try:
            self._client().put_object(
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentMD5=base64.b64encode(md5).decode("ascii"),
                ContentType="application/dicom" if key.endswith(".dcm") else "binary/octet-stream",
                Metadata={"sha256": sha256},
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not store {key} in {self.url}: {_reason(exc)}") from exc
        return sha256

    def get(self, key: str) -> bytes:
        with self.open(key) as body:
            try:
                return body.read()
            except (BotoCoreError, ClientError, OSError) as exc:
                raise StorageError(f"could not read {key} from {self.url}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        """The object's body as a stream; an error while reading it is botocore's own."""
        name = self._name(key)
        try:
            response = self._client().get_object(Bucket=self.bucket, Key=name)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not read {key} from {self.url}: {_reason(exc)}") from exc
        return cast(BinaryIO, response["Body"])

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self._client().head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise StorageError(f"could not look up {key} in {self.url}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not look up {key} in {self.url}: {exc}") from exc
        return True

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self._client().delete_object(Bucket=self.bucket, Key=name)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not delete {key} from {self.url}: {_reason(exc)}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self._client().get_paginator("list_objects_v2")
        try:
            for page in pages.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(base) :]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not list {self.url}: {_reason(exc)}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        return f"{err.get('Code', 'error')} ({status}): {err.get('Message', '')}".rstrip(": ")
    return str(exc)
