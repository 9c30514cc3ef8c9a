"""Authentication and tenancy: principals, roles, passwords, API tokens, web sessions.

- :mod:`~radsight.auth.principals`: :class:`Principal`, the roles, and :func:`scope_of`,
  the one rule from a principal to the organisations it may see;
- :mod:`~radsight.auth.passwords`: people, argon2id password hashes;
- :mod:`~radsight.auth.signin`: sign-in with a password, throttled and locked
  (:mod:`~radsight.auth.hashing` bounds the argon2 work);
- :mod:`~radsight.auth.tokens`: API tokens (random, shown once, stored as SHA-256);
- :mod:`~radsight.auth.sessions`: web sessions (cookie + CSRF token);
- :mod:`~radsight.auth.oidc`: OpenID Connect single sign-on (Authorization Code + PKCE,
  ID token verification, with Authlib); :mod:`~radsight.auth.oidc_users`: its claims ->
  role, organisation and user row.

The rows live in :mod:`radsight.store.people` (the store alone talks SQL); the HTTP edge
that reads a bearer token or a cookie is :mod:`radsight.api.auth`.
"""

from radsight.auth.passwords import (
    MIN_PASSWORD_LENGTH,
    create_user,
    hash_password,
    set_password,
)
from radsight.auth.principals import (
    PLATFORM_ROLES,
    TOKEN_ROLES,
    USER_ROLES,
    Principal,
    principal_for_user,
    scope_of,
)
from radsight.auth.sessions import WebSession, create_session, end_session, resolve_session
from radsight.auth.signin import authenticate, lock_state, unlock_user
from radsight.auth.tokens import TOKEN_PREFIX, create_token, resolve_token

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "PLATFORM_ROLES",
    "TOKEN_PREFIX",
    "TOKEN_ROLES",
    "USER_ROLES",
    "Principal",
    "WebSession",
    "authenticate",
    "create_session",
    "create_token",
    "create_user",
    "end_session",
    "hash_password",
    "lock_state",
    "principal_for_user",
    "resolve_session",
    "resolve_token",
    "scope_of",
    "set_password",
    "unlock_user",
]
