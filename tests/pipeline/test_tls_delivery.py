"""Results delivered over DICOM TLS (issue 16, point 7): a destination marked ``tls`` is
reached over TLS only, its certificate checked against ``dicom_tls_ca`` and its name, and
Radsight presents its own certificate. The PACS is dcmtk's storescp built with OpenSSL."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from radsight import tls
from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.delivery.cstore import ClientTls, Target, send_files
from radsight.errors import ConfigError, DeliveryError
from radsight.pipeline.runner import run_one
from radsight.runtime import Runtime
from radsight.store import results as resultstore
from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import JobRow
from radsight.testing.peers import Storescp
from tests.conftest import MigratedDatabases, require_tool
from tests.monitor.conftest import analyse_studies, make_org
from tests.pipeline.test_outputs import two_image_study
from tests.tls_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def registry() -> Registry:
    return Registry.from_entry_points()


@pytest.fixture
def make_rt(
    tmp_path: Path, migrated_databases: MigratedDatabases
) -> Iterator[Callable[..., Runtime]]:
    opened: list[Runtime] = []

    def make(**settings: object) -> Runtime:
        data = tmp_path / "data"
        migrated_databases.copy_sqlite(data / "radsight.db")
        rt = Runtime.open(load_settings(None, data_dir=data, unsafe_no_fsync=True, **settings))
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.close()


@pytest.fixture
def tls_pacs(tmp_path: Path) -> Iterator[Callable[..., Storescp]]:
    """storescp speaking TLS only with the given certificate; ``require_client``: it wants
    a client certificate its CA file signed (dcmtk's default ``-rc``)."""
    require_tool("storescp")
    started: list[Storescp] = []

    def start(cert: Path, key: Path, ca: Path, *, require_client: bool = True) -> Storescp:
        extra = ["+tls", str(key), str(cert), "-pw", "+cf", str(ca)]
        extra.append("-rc" if require_client else "-ic")
        scp = Storescp(tmp_path / f"pacs{len(started)}", ae_title="TLS_PACS", extra=extra)
        started.append(scp.start())
        return scp

    yield start
    for scp in started:
        scp.stop()


def _radsight_tls(pki: Pki) -> dict[str, object]:
    cert, key = pki.clients["radsight"]
    return {"dicom_tls_cert": cert, "dicom_tls_key": key, "dicom_tls_ca": pki.ca}


def _deliver(
    rt: Runtime, registry: Registry, tmp_path: Path, pacs: Storescp, **tls: object
) -> tuple[JobRow, list]:
    """Analyse one study for an organisation whose destination is ``pacs``; run the one
    delivery job as a worker does; return the job afterwards and the result's objects."""
    org = make_org(rt)
    with rt.db.session() as s:
        tenants.create_destination(s, org, "pacs", pacs.ae_title, "127.0.0.1", pacs.port, **tls)  # type: ignore[arg-type]
    analyse_studies(rt, registry, org, [two_image_study()], tmp_path)
    assert run_one(rt, registry, "test-worker", queues=["delivery"])
    with rt.db.session() as s:
        (job,) = s.query(JobRow).filter(JobRow.kind == "deliver").all()
        s.expunge(job)
        (result,) = resultstore.list_results(s, scope=Scope.ALL)
        objects = [(o.sop_class_uid, o.sop_instance_uid) for o in result.objects]
    return job, objects


def test_a_result_reaches_a_tls_pacs_that_requires_radsights_certificate(
    tmp_path, pki, make_rt, registry, tls_pacs
):
    pacs = tls_pacs(pki.server_cert, pki.server_key, pki.ca, require_client=True)
    rt = make_rt(**_radsight_tls(pki))
    job, objects = _deliver(rt, registry, tmp_path, pacs, tls=True)
    assert (job.state, job.error_code) == ("done", ""), job.error
    received = [pydicom.dcmread(p, stop_before_pixels=True) for p in pacs.files()]
    assert sorted((d.SOPClassUID, d.SOPInstanceUID) for d in received) == sorted(objects)
    # the same PACS refuses a TLS client without a certificate: Radsight's was presented
    with pytest.raises(DeliveryError, match=r"TLS with destination 'pacs'.*certificate required"):
        send_files(
            Target(pacs.ae_title, "127.0.0.1", pacs.port, tls_server_name="localhost", name="pacs"),
            [rt.files.get(k) for k in _keys(rt)],
            calling_ae_title="RADSIGHT",
            timeout_s=10,
            client_tls=ClientTls(ca=pki.ca),
        )
    assert len(pacs.files()) == len(objects), "nothing more arrived"


def _keys(rt: Runtime) -> list[str]:
    with rt.db.session() as s:
        (result,) = resultstore.list_results(s, scope=Scope.ALL)
        return [o.storage_key for o in result.objects]


def test_a_pacs_certificate_from_another_ca_fails_the_job_and_sends_nothing(
    tmp_path, pki, make_rt, registry, tls_pacs
):
    pacs = tls_pacs(pki.foreign_server_cert, pki.foreign_server_key, pki.ca, require_client=False)
    rt = make_rt(**_radsight_tls(pki))
    job, _objects = _deliver(rt, registry, tmp_path, pacs, tls=True)
    assert job.state == "queued" and job.attempts == 1, "retried like any delivery failure"
    assert job.error_code == "delivery_error"
    assert job.error.startswith("TLS with destination 'pacs' (TLS_PACS@127.0.0.1:")
    assert "certificate verify failed: unable to get local issuer certificate" in job.error
    assert pacs.files() == []


def test_the_certificate_must_name_the_destination(tmp_path, pki, make_rt, registry, tls_pacs):
    pacs = tls_pacs(pki.server_cert, pki.server_key, pki.ca, require_client=False)
    rt = make_rt(**_radsight_tls(pki))
    job, _objects = _deliver(
        rt, registry, tmp_path, pacs, tls=True, tls_server_name="pacs.elsewhere.example"
    )
    assert job.state == "queued" and "'pacs.elsewhere.example'" in job.error
    assert "certificate verify failed: Hostname mismatch" in job.error
    assert pacs.files() == []
    # the operator names the host the certificate was issued for; the retry goes through
    with rt.db.session() as s:
        tenants.update_destination(s, 1, "pacs", tls_server_name="localhost")
        s.query(JobRow).filter(JobRow.id == job.id).update({"run_after": utcnow()})
    assert run_one(rt, registry, "test-worker", queues=["delivery"])
    with rt.db.session() as s:
        assert s.get(JobRow, job.id).state == "done"
    assert len(pacs.files()) == 3


def test_a_tls_destination_never_falls_back_to_plain_tcp(
    tmp_path, pki, make_rt, registry, storescp
):
    rt = make_rt(**_radsight_tls(pki))
    job, _objects = _deliver(rt, registry, tmp_path, storescp, tls=True)
    assert job.state == "queued" and job.error.startswith("TLS with destination 'pacs'")
    assert "TLS handshake failed" in job.error
    assert storescp.files() == []


def test_deliveries_and_the_listener_share_one_tls_policy(pki):
    cert, key = pki.clients["radsight"]
    server = tls.server_context(pki.server_cert, pki.server_key, pki.ca)
    client = tls.client_context(cert, key, pki.ca)
    assert client.minimum_version == server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["name"] for c in client.get_ciphers()] == [c["name"] for c in server.get_ciphers()]
    assert all(c["aead"] for c in client.get_ciphers())
    assert (client.verify_mode, client.check_hostname) == (ssl.CERT_REQUIRED, True)
    with pytest.raises(ConfigError, match="cannot load"):
        tls.client_context(None, None, pki.ca.parent / "missing.pem")
