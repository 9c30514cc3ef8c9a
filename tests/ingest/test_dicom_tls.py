"""DICOM TLS (PS3.15 B.9/B.11): the listener speaks TLS, requires a client certificate from
its CA, and checks the subject an AE title is registered with. Peers: dcmtk's echoscu and
storescu built with OpenSSL (``+tls``), and a plain-TCP echoscu."""

from __future__ import annotations

import subprocess

import pytest

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import dcmtk
from tests.conftest import require_tool
from tests.ingest.listener_helpers import echoscu, running_listener
from tests.tls_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki, client: str | None) -> list[str]:
    if client is None:  # TLS without a client certificate
        return ["+tla", "+cf", str(pki.ca)]
    cert, key = pki.clients[client]
    return ["+tls", str(key), str(cert), "-pw", "+cf", str(pki.ca)]


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    require_tool("echoscu")


SUBJECT = "CN=CT1 North,O=North Clinic,C=GB"


def test_tls_with_client_certificates(tmp_path, pki):
    with running_listener(
        tmp_path,
        dicom_tls_cert=pki.server_cert,
        dicom_tls_key=pki.server_key,
        dicom_tls_ca=pki.ca,
    ) as lst:
        lst.register("CT1", tls_client_subject=SUBJECT)
        lst.register("CT2")  # any certificate the CA signed
        ok = echoscu(lst.port, "CT1", "RADSIGHT", *tls_args(pki, "modality"))
        assert ok.returncode == 0, ok.stderr
        # a certificate the CA signed, but not the subject CT1 is registered with
        wrong = echoscu(lst.port, "CT1", "RADSIGHT", *tls_args(pki, "other-subject"))
        assert wrong.returncode != 0 and "Calling AE Title Not Recognized" in wrong.stderr
        assert echoscu(lst.port, "CT2", "RADSIGHT", *tls_args(pki, "other-subject")).returncode == 0
        # the right subject from another CA, no certificate, plain TCP: no handshake
        for args in (tls_args(pki, "foreign"), tls_args(pki, None), []):
            res = echoscu(lst.port, "CT1", "RADSIGHT", *args)
            assert res.returncode != 0, args
        codes = {r.error_code: r for r in lst.rejections()}
        assert "CN=Someone Else" in codes["caller_not_allowed"].message
        assert codes["tls_refused"].count == 3
        # and storescu sends an instance over TLS
        f = tmp_path / "cr.dcm"
        make_radiograph().save_as(f, enforce_file_format=True)
        res = subprocess.run(
            [
                dcmtk("storescu"),
                "-aet",
                "CT1",
                "-aec",
                "RADSIGHT",
                *tls_args(pki, "modality"),
                "127.0.0.1",
                str(lst.port),
                str(f),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 0, res.stderr


def test_tls_without_client_certificates_still_refuses_plain_tcp(tmp_path, pki):
    with running_listener(
        tmp_path, dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.server_key
    ) as lst:
        lst.register("CT2")
        assert echoscu(lst.port, "CT2", "RADSIGHT", *tls_args(pki, None)).returncode == 0
        assert echoscu(lst.port, "CT2").returncode != 0
        assert lst.rejections()[0].error_code == "tls_refused"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ssl.TLSVersion.TLSv1_1
def test_tls_only_offers_tls_1_2_or_later(tmp_path, pki):
    import socket
    import ssl

    with running_listener(
        tmp_path, dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.server_key
    ) as lst:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.ca)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection(("127.0.0.1", lst.port), timeout=5) as raw:
            with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
                ctx.wrap_socket(raw, server_hostname="localhost")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.ca)
        with socket.create_connection(("127.0.0.1", lst.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
