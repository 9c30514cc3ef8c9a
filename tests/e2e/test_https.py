"""HTTPS on ``radsight serve`` (issue 16, finding 7: no HTTPS): the certificate and key
settings, client certificates (``https_client_ca``, mutual TLS for systems), HSTS and
Secure session cookies. Certificates are made by the test with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from radsight import auth
from radsight.config import load_settings
from radsight.errors import ConfigError
from radsight.runtime import Runtime
from radsight.server import Server
from radsight.store import tenants

PASSWORD = "correct horse battery"


class Pki:
    """A CA and the certificates it signs, written as PEM files into ``folder``."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = folder / f"{name}-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:  # type: ignore[no-untyped-def]
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    folder = tmp_path / "pki"
    folder.mkdir()
    hospital, stranger = Pki(folder, "hospital"), Pki(folder, "stranger")
    return {
        "ca": hospital.ca_file,
        "server": hospital.issue("radsight.local", server=True),
        "client": hospital.issue("pacs-gateway", server=False),
        "wrong_client": stranger.issue("impostor", server=False),
    }


def _context(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


def _https_env(pki: dict, **extra: str) -> dict[str, str]:  # type: ignore[type-arg]
    cert, key = pki["server"]
    return {"RADSIGHT_HTTPS_CERT": str(cert), "RADSIGHT_HTTPS_KEY": str(key), **extra}


def test_https_with_hsts_and_secure_session_cookies(make_server, pki):
    server = make_server(workers=0, env=_https_env(pki))
    settings = load_settings(None, data_dir=server.data_dir)
    rt = Runtime.open(settings)
    with rt.db.session() as s:
        org = tenants.create_organisation(s, "City Hospital", "North")
        auth.create_user(s, org.id, "dr.ames", PASSWORD, "radiologist")
    rt.close()
    server.start()
    assert server.url.startswith("https://")
    with httpx.Client(base_url=server.url, verify=_context(pki["ca"]), timeout=10) as web:
        r = web.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        # sign in: the session cookie is sent over HTTPS only
        page = web.get("/signin")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        r = web.post(
            "/signin",
            data={"username": "dr.ames", "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert r.status_code == 303
        (session,) = [c for c in r.headers.get_list("set-cookie") if "radsight_session=" in c]
        assert "Secure" in session and "HttpOnly" in session
    # plain HTTP on the HTTPS port gets no answer; an unknown CA is not trusted
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.http_port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)  # the system CAs do not know ours


def test_client_certificates_signed_by_https_client_ca_are_required(make_server, pki):
    env = _https_env(pki, RADSIGHT_HTTPS_CLIENT_CA=str(pki["ca"]))
    server = make_server(workers=0, env=env).start()

    def health(client: tuple[Path, Path] | None) -> int:
        ctx = _context(pki["ca"], client)
        with httpx.Client(base_url=server.url, verify=ctx, timeout=5) as http:
            return http.get("/health").status_code

    assert health(pki["client"]) == 200
    for refused in (None, pki["wrong_client"]):
        with pytest.raises(httpx.HTTPError):
            health(refused)
    assert health(pki["client"]) == 200  # the server still serves after refusing


def test_https_settings_are_checked_before_serving(pki, tmp_path):
    cert, key = pki["server"]
    with pytest.raises(ConfigError, match="RADSIGHT_HTTPS_CLIENT_CA needs"):
        load_settings(None, data_dir=tmp_path, https_client_ca=pki["ca"])
    settings = load_settings(
        None, data_dir=tmp_path, https_cert=cert, https_key=key,
        https_client_ca=tmp_path / "absent.pem",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="RADSIGHT_HTTPS_CLIENT_CA: .*absent.pem is not"):
        Server.prepare(settings)
    assert settings.cookies_secure
