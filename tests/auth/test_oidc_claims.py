"""Single sign-on claims -> role and organisation (radsight.auth.oidc_users.map_claims):
the rules docs/security.md states, without a provider (tests/web/test_sso.py has one)."""

from __future__ import annotations

import pytest

from radsight.auth.oidc_users import map_claims
from radsight.config import load_settings
from radsight.errors import ConfigError, SignInRefused

ROLE_MAP = {
    "rad": "radiologist",
    "it": "org_admin",
    "sup": "supervisor",
    "ops": "admin",
}


def settings(**overrides: object):  # type: ignore[no-untyped-def]
    values = {
        "oidc_issuer": "https://idp.example.org/realms/h",
        "oidc_client_id": "radsight",
        "oidc_role_map": ROLE_MAP,
        **overrides,
    }
    return load_settings(None, **values)


@pytest.mark.parametrize(
    ("claims", "role"),
    [
        ({"roles": "rad"}, "radiologist"),
        ({"roles": ["staff", "rad"]}, "radiologist"),
        ({"roles": ["rad", "it"]}, "org_admin"),
        ({"roles": ["it", "sup", "rad"]}, "supervisor"),
        ({"roles": ["rad", "ops"]}, "admin"),
    ],
)
def test_the_most_privileged_mapped_role_wins(claims, role):
    mapped = map_claims(settings(), {"sub": "s", "organisation": "City Hospital", **claims})
    assert mapped.role == role


def test_a_dotted_claim_name_reaches_into_nested_claims_as_keycloak_sends_them():
    claims = {
        "sub": "s",
        "realm_access": {"roles": ["offline_access", "it"]},
        "org": ["City Hospital"],
        "preferred_username": "it.berg",
        "name": "Ingrid Berg",
    }
    mapped = map_claims(
        settings(oidc_roles_claim="realm_access.roles", oidc_organisation_claim="org"), claims
    )
    assert (mapped.role, mapped.organisation) == ("org_admin", "City Hospital")
    assert (mapped.username, mapped.display_name) == ("it.berg", "Ingrid Berg")


def test_a_platform_admin_needs_no_organisation_and_names_fall_back_to_email_then_subject():
    mapped = map_claims(settings(), {"sub": "abc-123", "roles": ["ops"]})
    assert (mapped.role, mapped.organisation, mapped.username) == ("admin", None, "abc-123")
    mapped = map_claims(settings(), {"sub": "x", "roles": ["ops"], "email": "ops@h.org"})
    assert mapped.username == "ops@h.org"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"roles": ["nurse"], "organisation": "City Hospital"}, "no_role"),
        ({"roles": 42, "organisation": "City Hospital"}, "no_role"),
        ({"roles": ["rad"]}, "unknown_organisation"),
        ({"roles": ["rad"], "organisation": ["A", "B"]}, "unknown_organisation"),
        ({"roles": ["rad"], "organisation": "  "}, "unknown_organisation"),
    ],
)
def test_refusals_say_why(claims, reason):
    with pytest.raises(SignInRefused) as refused:
        map_claims(settings(), {"sub": "s", **claims})
    assert refused.value.reason == reason
    assert refused.value.http_status == 403


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"oidc_role_map": {"x": "root"}}, "roles must be one of"),
        ({"oidc_issuer": "http://idp.example.org"}, "must be an https:// URL"),
        ({"oidc_client_id": ""}, "needs RADSIGHT_OIDC_CLIENT_ID"),
    ],
)
def test_settings_that_cannot_work_stop_the_server_at_start(overrides, says):
    with pytest.raises(ConfigError, match=says):
        settings(**overrides)
