"""A throwaway PKI for DICOM TLS tests, made with ``cryptography``: a CA, the certificates
it signed, and another CA's (shared by the listener's and the deliveries' TLS tests)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    #: name -> (certificate, key)
    clients: dict[str, tuple[Path, Path]]
    #: a server certificate for the same names, signed by another CA
    foreign_server_cert: Path
    foreign_server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "North Clinic"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _issue(
    out: Path,
    stem: str,
    subject: x509.Name,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[Path, Path, x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = b.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, subject, key


def make_pki(out: Path) -> Pki:
    """A test CA and what it signed (server ``radsight.test`` for localhost and 127.0.0.1;
    clients ``modality`` CN=CT1 North, ``other-subject``, ``radsight`` CN=Radsight), and
    another CA with a server certificate (``foreign_server``) and a client (``foreign``)
    of its own."""
    ca_cert, _k, ca_name, ca_key = _issue(out, "ca", _name("Radsight Test CA"), None, ca=True)
    _c, _k, other_name, other_key = _issue(out, "other-ca", _name("Other CA"), None, ca=True)
    server_cert, server_key, _n, _key = _issue(
        out, "server", _name("radsight.test"), (ca_name, ca_key), server=True
    )
    foreign_cert, foreign_key, _n, _key = _issue(
        out, "foreign-server", _name("radsight.test"), (other_name, other_key), server=True
    )
    clients = {}
    for stem, cn, issuer in (
        ("modality", "CT1 North", (ca_name, ca_key)),
        ("other-subject", "Someone Else", (ca_name, ca_key)),
        ("radsight", "Radsight", (ca_name, ca_key)),
        ("foreign", "CT1 North", (other_name, other_key)),
    ):
        cert, key, _n, _key = _issue(out, stem, _name(cn), issuer)
        clients[stem] = (cert, key)
    return Pki(ca_cert, server_cert, server_key, clients, foreign_cert, foreign_key)
