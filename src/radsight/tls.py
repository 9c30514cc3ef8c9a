"""DICOM TLS policy (PS3.15 B.9/B.11, BCP 195): one home for the listener's server context
and the delivery's client context, so both ends speak the same protocol versions and
cipher suites."""

from __future__ import annotations

import ssl
from pathlib import Path

from radsight.errors import ConfigError

#: forward-secret AEAD suites only (TLS 1.2; TLS 1.3's suites are all AEAD)
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL"


def _policy(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """The listener's context: TLS 1.2 or later, forward-secret AEAD cipher suites only;
    with ``ca`` a client certificate it signed is required."""
    ctx = _policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"DICOM TLS: cannot load {cert}, {key} or {ca}: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED if ca is not None else ssl.CERT_NONE
    return ctx


def client_context(
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    sslsocket_class: type[ssl.SSLSocket] | None = None,
) -> ssl.SSLContext:
    """A delivery's context, same policy: the peer's certificate must chain to ``ca``
    (None: the system's trust store) and name the host (``check_hostname``); with
    ``cert`` and ``key`` Radsight presents its own certificate to a peer that asks."""
    ctx = _policy(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED, check_hostname
    try:
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if cert is not None and key is not None:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"DICOM TLS: cannot load {cert}, {key} or {ca}: {exc}") from exc
    if sslsocket_class is not None:
        ctx.sslsocket_class = sslsocket_class
    return ctx
