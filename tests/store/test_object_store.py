"""Object stores: a directory and S3 (an S3-compatible server over HTTP), one interface."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import ConfigError, StorageError
from radsight.ingest.accept import accept_instance
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.store.files import DirectoryStore, ObjectStore, open_object_store
from radsight.store.s3 import S3Store
from radsight.testing.peers import S3Server


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(bucket="radsight-store-tests").start()
    yield server
    server.stop()


def s3_store(server: S3Server, prefix: str, **kwargs: object) -> S3Store:
    return S3Store(
        server.bucket,
        prefix,
        endpoint_url=server.endpoint_url,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "directory":
        return DirectoryStore(tmp_path / "objects")
    server = request.getfixturevalue("s3_server")
    return s3_store(server, f"t-{uuid.uuid4().hex[:8]}")


def test_put_then_get_returns_the_same_bytes_and_their_sha256(store):
    data = bytes(range(256)) * 4000
    sha = store.put("instances/1/1.2.3/1.2.3.4/1.2.3.4.5.dcm", data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.get("instances/1/1.2.3/1.2.3.4/1.2.3.4.5.dcm") == data
    with store.open("instances/1/1.2.3/1.2.3.4/1.2.3.4.5.dcm") as fh:
        assert fh.read(10) == data[:10]
        assert fh.read() == data[10:]


def test_a_put_replaces_what_was_under_the_key(store):
    store.put("results/1/s/a-1/sr.dcm", b"old")
    store.put("results/1/s/a-1/sr.dcm", b"new content")
    assert store.get("results/1/s/a-1/sr.dcm") == b"new content"


def test_exists_delete_and_keys(store):
    for key in ["instances/1/a/x.dcm", "instances/1/b/y.dcm", "instances/2/c/z.dcm"]:
        store.put(key, key.encode())
    assert store.exists("instances/1/a/x.dcm")
    assert not store.exists("instances/1/a/nothing.dcm")
    assert sorted(store.keys("instances/1/")) == ["instances/1/a/x.dcm", "instances/1/b/y.dcm"]
    assert len(list(store.keys())) == 3
    assert list(store.keys("results/")) == []
    store.delete("instances/1/a/x.dcm")
    store.delete("instances/1/a/x.dcm")  # deleting what is gone is not an error
    assert not store.exists("instances/1/a/x.dcm")
    assert sorted(store.keys()) == ["instances/1/b/y.dcm", "instances/2/c/z.dcm"]


def test_reading_a_missing_key_is_a_storage_error_naming_it(store):
    with pytest.raises(StorageError, match="instances/9/missing.dcm"):
        store.get("instances/9/missing.dcm")
    with pytest.raises(StorageError, match="instances/9/missing.dcm"):
        store.open("instances/9/missing.dcm")


@pytest.mark.parametrize("key", ["../escape.dcm", "/etc/passwd", "a//b.dcm", "a/./b", ""])
def test_keys_are_relative_paths_of_plain_names(store, key):
    with pytest.raises(StorageError, match="storage key"):
        store.put(key, b"x")


def test_s3_objects_are_addressed_like_files(s3_server, tmp_path):
    key = "instances/3/1.2.840.1/1.2.840.1.1/1.2.840.1.1.1.dcm"
    directory = DirectoryStore(tmp_path / "objects")
    s3 = s3_store(s3_server, "site-a/radsight")
    for store in (directory, s3):
        store.put(key, b"DICM")
    assert (tmp_path / "objects" / key).read_bytes() == b"DICM"
    assert s3_server.keys("site-a/") == [f"site-a/radsight/{key}"]
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"site-a/radsight/{key}")
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"DICM").hexdigest()
    assert head["ContentType"] == "application/dicom"


def test_an_unreachable_s3_service_is_a_storage_error_not_a_success(tmp_path):
    down = S3Server(bucket="radsight-down")  # a port with nothing listening
    store = s3_store(down, "p", timeout_s=2, max_attempts=2)
    with pytest.raises(StorageError, match="could not store instances/1/x.dcm in s3://"):
        store.put("instances/1/x.dcm", b"data")
    with pytest.raises(StorageError, match="could not read"):
        store.get("instances/1/x.dcm")
    with pytest.raises(ConfigError, match="is not reachable"):
        store.check()


def test_an_outage_fails_puts_until_the_service_is_back(tmp_path):
    server = S3Server(bucket="radsight-outage").start()
    store = s3_store(server, "p", timeout_s=2, max_attempts=1)
    store.put("instances/1/before.dcm", b"before")
    server.stop()
    try:
        with pytest.raises(StorageError):
            store.put("instances/1/during.dcm", b"during")
    finally:
        server.start()
    try:
        store.put("instances/1/after.dcm", b"after")
        assert sorted(store.keys()) == ["instances/1/after.dcm", "instances/1/before.dcm"]
    finally:
        server.stop()


def test_check_names_a_missing_bucket(s3_server):
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        S3Store(
            "no-such-bucket",
            endpoint_url=s3_server.endpoint_url,
            access_key_id="k",
            secret_access_key="s",
        ).check()


# settings: the store is chosen by configuration only


def test_the_default_store_is_a_directory_in_the_data_dir(tmp_path):
    settings = load_settings(None, data_dir=tmp_path / "d")
    store = open_object_store(settings)
    assert isinstance(store, DirectoryStore)
    assert store.root == (tmp_path / "d" / "objects").resolve()
    shared = load_settings(None, data_dir=tmp_path / "d", object_store=f"file://{tmp_path}/s")
    assert open_object_store(shared).root == (tmp_path / "s").resolve()  # type: ignore[attr-defined]


def test_an_s3_url_selects_the_s3_store(s3_server, tmp_path, monkeypatch):
    for name, value in s3_server.env(prefix="cfg").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RADSIGHT_OBJECT_STORE", f"s3://{s3_server.bucket}/cfg/")
    store = open_object_store(load_settings(None, data_dir=tmp_path / "d"))
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (s3_server.bucket, "cfg", store.url)
    assert store.url == f"s3://{s3_server.bucket}/cfg"
    store.check()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"object_store": "gs://bucket/x"}, "RADSIGHT_OBJECT_STORE: .*s3://bucket"),
        ({"object_store": "s3://No_Such"}, "'No_Such' is not an S3 bucket name"),
        ({"object_store": "file://relative/x"}, "absolute path"),
        ({"s3_endpoint_url": "http://minio:9000"}, "is not an s3:// URL"),
        (
            {"object_store": "s3://bucket", "s3_access_key_id": "AKIA"},
            "RADSIGHT_S3_SECRET_ACCESS_KEY together",
        ),
        (
            {"object_store": "s3://bucket", "s3_endpoint_url": "minio:9000"},
            "RADSIGHT_S3_ENDPOINT_URL: .*http",
        ),
        ({"object_store": "s3://bucket", "s3_addressing_style": "dns"}, "S3_ADDRESSING_STYLE"),
    ],
)
def test_bad_object_store_settings_fail_fast_with_a_clear_message(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(None, data_dir=tmp_path, **settings)


def test_the_secret_key_is_not_shown_in_the_settings(tmp_path):
    settings = load_settings(
        None,
        data_dir=tmp_path,
        object_store="s3://bucket",
        s3_access_key_id="AKIA",
        s3_secret_access_key="very-secret",
    )
    assert "very-secret" not in repr(settings)


def test_an_instance_accepted_on_s3_is_stored_there_as_sent(s3_server, tmp_path):
    settings = load_settings(
        None,
        data_dir=tmp_path / "d",
        object_store=f"s3://{s3_server.bucket}/accept",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key,
    )
    rt = Runtime.open(settings)
    try:
        with rt.db.session() as s:
            org = tenants.create_organisation(s, "A", "R1").id
        ds = make_radiograph(rows=64, columns=64)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        accepted = accept_instance(rt, buf.getvalue(), organisation_id=org)
    finally:
        rt.close()
    (name,) = s3_server.keys("accept/")
    assert name.startswith(f"accept/instances/{org}/")
    assert name.endswith(f"/{accepted.sop_instance_uid}.dcm")
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=name)["Body"].read()
    assert body == buf.getvalue()
    assert pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID == accepted.sop_instance_uid


def test_runtime_refuses_to_start_on_a_missing_bucket(s3_server, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Runtime.open(
            load_settings(
                None,
                data_dir=tmp_path / "d",
                object_store="s3://not-created-here",
                s3_endpoint_url=s3_server.endpoint_url,
                s3_access_key_id="k",
                s3_secret_access_key="s",
            )
        )
