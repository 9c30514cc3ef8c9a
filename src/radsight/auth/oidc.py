"""OpenID Connect single sign-on: the Authorization Code flow with PKCE, with Authlib.

1. :meth:`OidcClient.begin`: a random ``state``, ``nonce`` and PKCE code verifier (S256)
   and the provider's authorization URL. The three travel in a short-lived cookie that
   only this server can have written (an HMAC under a key it draws at start), so a
   callback is accepted only in the browser that started the sign-in.
2. :meth:`OidcClient.finish`: the provider sends the browser back with ``code`` and
   ``state``; the state must be the cookie's, the code is exchanged at the token endpoint
   (with the code verifier and the client secret) by Authlib's OAuth 2.0 client, and the
   ID token is verified with joserfc and Authlib's OpenID Connect claims: the signature
   against the provider's published keys (JWKS; asymmetric algorithms only, never
   ``none`` or a shared-secret HMAC), ``iss``, ``aud`` (this client), ``exp``/``iat``,
   ``nonce`` (the cookie's), ``azp`` and ``at_hash``.
3. :mod:`radsight.auth.oidc_users` turns the verified claims into a role, an
   organisation and a user row.

Where the provider is, comes from discovery (``<issuer>/.well-known/openid-configuration``),
cached for :data:`METADATA_TTL_S`; its keys are fetched again once when a token names a
key id they lack (key rotation). Anything the provider answers wrongly is
:class:`~radsight.errors.SignInRefused`; a provider that does not answer is
:class:`~radsight.errors.IdentityProviderUnavailable`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from radsight.config import Settings
from radsight.errors import IdentityProviderUnavailable, SignInRefused

with warnings.catch_warnings():
    # Authlib's httpx client prefers the "httpx2" package and warns once, at import, that
    # it falls back to httpx (which Radsight uses everywhere else)
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import OAuth2Client

#: discovery answers are used this long before they are fetched again
METADATA_TTL_S = 3600.0
#: a sign-in started longer ago than this is refused at the callback (start again)
PENDING_TTL_S = 600.0
#: seconds of clock difference tolerated on ``exp`` and ``iat``
LEEWAY_S = 60
HTTP_TIMEOUT_S = 10.0
#: ID token signatures accepted: public-key algorithms only (OpenID Connect Core 10.1)
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True)
class PendingLogin:
    """What the callback checks against: kept in the browser, signed by this server."""

    state: str
    nonce: str
    code_verifier: str
    next_url: str
    started_at: float


@dataclass(frozen=True)
class Identity:
    """A verified ID token: its claims, and ``subject`` = ``"<iss>|<sub>"``."""

    subject: str
    claims: dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OidcClient:
    """Radsight as an OpenID Connect relying party of one provider (``oidc_issuer``)."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret.get_secret_value()
        scopes = settings.oidc_scopes.split()
        self.scope = " ".join(["openid", *(s for s in scopes if s != "openid")])
        self.display_name = settings.oidc_display_name or urlsplit(self.issuer).hostname or ""
        self._transport = transport
        # signs the pending-login cookie; a restart forgets it (a sign-in under way then
        # starts again: the callback says so)
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: dict[str, Any] | None = None

    # --- the provider's documents ------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with httpx.Client(timeout=HTTP_TIMEOUT_S, transport=self._transport) as http:
                response = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable(
                f"The sign-in provider at {self.issuer} cannot be reached ({what}: "
                f"{type(exc).__name__}). Try again later, or sign in with a password."
            ) from exc
        if response.status_code != 200:
            raise IdentityProviderUnavailable(
                f"The sign-in provider at {self.issuer} answered HTTP {response.status_code} "
                f"for its {what}"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise IdentityProviderUnavailable(f"The sign-in provider's {what} is not a JSON object")
        return body

    def metadata(self) -> dict[str, Any]:
        """The discovery document (cached), checked to be this issuer's."""
        with self._lock:
            fresh = time.monotonic() - self._metadata_at < METADATA_TTL_S
            if self._metadata is not None and fresh:
                return self._metadata
        document = self._get_json(
            f"{self.issuer}/.well-known/openid-configuration", "discovery document"
        )
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise IdentityProviderUnavailable(
                f"The discovery document names the issuer {document.get('issuer')!r}, "
                f"not {self.issuer!r} (check RADSIGHT_OIDC_ISSUER)"
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(key), str):
                raise IdentityProviderUnavailable(f"The discovery document has no {key}")
        with self._lock:
            self._metadata, self._metadata_at = document, time.monotonic()
        return document

    def _key_set(self, force: bool = False) -> KeySet:
        with self._lock:
            cached = None if force else self._jwks
        if cached is None:
            cached = self._get_json(self.metadata()["jwks_uri"], "signing keys (JWKS)")
            with self._lock:
                self._jwks = cached
        try:
            return KeySet.import_key_set(cached)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise IdentityProviderUnavailable(
                "The sign-in provider's signing keys cannot be read"
            ) from exc

    def _oauth(self, redirect_uri: str) -> OAuth2Client:
        metadata = self.metadata()
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if not self.client_secret:
            method = "none"  # a public client: PKCE alone binds the code to this server
        elif "client_secret_basic" in methods or "client_secret_post" not in methods:
            method = "client_secret_basic"
        else:
            method = "client_secret_post"
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret or None,
            token_endpoint_auth_method=method,
            scope=self.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_S,
            transport=self._transport,
        )

    # --- step 1: to the provider --------------------------------------------------------

    def begin(self, redirect_uri: str, next_url: str) -> tuple[str, str]:
        """(the provider's authorization URL, the pending-login cookie's value)."""
        pending = PendingLogin(
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            next_url=next_url,
            started_at=time.time(),
        )
        with self._oauth(redirect_uri) as oauth:
            url, _state = oauth.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=pending.state,
                code_verifier=pending.code_verifier,
                nonce=pending.nonce,
            )
        return url, self._seal(pending)

    def _seal(self, pending: PendingLogin) -> str:
        payload = _b64(json.dumps(asdict(pending)).encode())
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return f"{payload}.{_b64(mac)}"

    def read_pending(self, cookie: str) -> PendingLogin:
        """The sign-in this browser started here, or :class:`SignInRefused` (``state``)."""
        stale = SignInRefused(
            "This sign-in was not started in this browser, or it took too long, or the "
            "server restarted meanwhile: start again.",
            reason="state_mismatch",
        )
        payload, _, mac = cookie.partition(".")
        expected = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(mac), expected):
                raise stale
            pending = PendingLogin(**json.loads(_unb64(payload)))
        except (ValueError, TypeError):
            raise stale from None
        if time.time() - pending.started_at > PENDING_TTL_S:
            raise stale
        return pending

    # --- step 2: back from the provider -------------------------------------------------

    def finish(
        self, pending: PendingLogin, params: Mapping[str, str], redirect_uri: str
    ) -> Identity:
        """Check the state, exchange the code, verify the ID token: the user's claims."""
        if "error" in params:
            text = params.get("error_description") or params["error"]
            raise SignInRefused(
                f"The sign-in provider refused: {text[:200]}", reason="provider_refused"
            )
        state = params.get("state", "")
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise SignInRefused(
                "The answer from the sign-in provider does not belong to the sign-in "
                "started in this browser (state mismatch): start again.",
                reason="state_mismatch",
            )
        code = params.get("code", "")
        if not code:
            raise SignInRefused("The sign-in provider sent no code.", reason="invalid_token")
        try:
            with self._oauth(redirect_uri) as oauth:
                token = oauth.fetch_token(
                    self.metadata()["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                )
        except OAuthError as exc:
            raise SignInRefused(
                f"The sign-in provider did not accept the code: {exc.error}",
                reason="provider_refused",
            ) from exc
        except (httpx.HTTPError, ValueError) as exc:  # unreachable, 5xx, not JSON
            raise IdentityProviderUnavailable(
                f"The sign-in provider at {self.issuer} cannot be reached (token endpoint: "
                f"{type(exc).__name__}). Try again later, or sign in with a password."
            ) from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused(
                "The sign-in provider sent no ID token (is the 'openid' scope allowed?)",
                reason="invalid_token",
            )
        claims = self.verify_id_token(id_token, pending.nonce, token.get("access_token"))
        return Identity(subject=f"{claims['iss']}|{claims['sub']}", claims=claims)

    def verify_id_token(
        self, id_token: str, nonce: str, access_token: str | None = None
    ) -> dict[str, Any]:
        """The claims of a valid ID token for this client and this nonce, else refused."""
        metadata = self.metadata()
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in offered if a in ASYMMETRIC_ALGORITHMS]
        registry = JWSRegistry(algorithms=algorithms, strict_check_header=False)
        try:
            try:
                token = jwt.decode(id_token, self._key_set(), registry=registry)
            except InvalidKeyIdError:  # the provider rotated its keys
                token = jwt.decode(id_token, self._key_set(force=True), registry=registry)
            params: dict[str, Any] = {"nonce": nonce, "client_id": self.client_id}
            if access_token:
                params["access_token"] = access_token
            options: dict[str, Any] = {
                "iss": {"essential": True, "value": metadata["issuer"]},
                "aud": {"essential": True, "value": self.client_id},
                "sub": {"essential": True},
            }
            claims = CodeIDToken(token.claims, token.header, options, params)
            claims.validate(leeway=LEEWAY_S)
        except (JoseError, ValueError) as exc:
            description = getattr(exc, "description", "") or str(exc) or type(exc).__name__
            raise SignInRefused(
                f"The ID token from the sign-in provider is not valid: {description}",
                reason="invalid_token",
            ) from exc
        return dict(claims)

    # --- sign-out -----------------------------------------------------------------------

    def logout_url(self, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout at the provider, if it offers an ``end_session_endpoint``."""
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except IdentityProviderUnavailable:
            return None
        if not isinstance(endpoint, str) or not endpoint:
            return None
        query = urlencode(
            {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
