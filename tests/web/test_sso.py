"""Single sign-on through a real OpenID Connect provider process (``oidc-provider-mock``).

The provider runs as a child process on a free loopback port (its own discovery document,
JWKS, RS256-signed ID tokens, nonce required); Radsight is the web app served by uvicorn.
A person signs in the way a browser does: Radsight's ``/auth/oidc/login`` -> the
provider's authorization form (the subject is picked there, the claims were set at the
provider) -> Radsight's callback -> the worklist of their organisation. httpx plays the
browser in most tests; one test is real headless Chromium.
"""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.auth.oidc import OidcClient
from radsight.config import Settings, load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import SignInRefused
from radsight.ingest.accept import accept_instance
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import people, tenants
from radsight.store.scope import Scope
from radsight.testing.peers import free_port
from radsight.web import create_app
from tests.conftest import REPO
from tests.web.conftest import serving

PASSWORD = "correct horse battery"
CLIENT_ID = "radsight-test"
ROLE_MAP = {
    "rs-radiologist": "radiologist",
    "rs-org-admin": "org_admin",
    "rs-supervisor": "supervisor",
    "rs-platform": "admin",
}


@dataclasses.dataclass
class Provider:
    issuer: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"the provider exited: see {self.log}"
            assert time.monotonic() < deadline, f"the provider did not start in {timeout_s} s"
            try:
                url = f"{self.issuer}/.well-known/openid-configuration"
                if httpx.get(url, timeout=1).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)


@pytest.fixture(scope="module")
def provider_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """``oidc-provider-mock`` on 127.0.0.1, starting (the site is set up meanwhile)."""
    port = free_port()
    log = tmp_path_factory.mktemp("idp") / "provider.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "--port", str(port), "--require-nonce"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Provider(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def provider(site: Site, provider_process: Provider) -> str:
    """The running provider's issuer URL."""
    return provider_process.issuer


def set_claims(issuer: str, sub: str, **claims: Any) -> None:
    """What the provider will say about ``sub`` (as its administrator would set it)."""
    httpx.put(f"{issuer}/users/{sub}", json=claims, timeout=5).raise_for_status()


def _study(rt: Runtime, organisation_id: int, patient_name: str) -> None:
    ds = make_radiograph(rows=64, columns=64, bright_spot=None)
    ds.PatientName = patient_name
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(rt, buf.getvalue(), organisation_id=organisation_id)


def _open_site(data_dir: Path, issuer: str) -> tuple[Runtime, Any]:
    settings = load_settings(
        None,
        data_dir=data_dir,
        unsafe_no_fsync=True,
        oidc_issuer=issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret="client-secret-of-the-test",
        oidc_role_map=ROLE_MAP,
        oidc_display_name="Test IdP",
    )
    rt = Runtime.open(settings)
    registry = Registry.from_entry_points()
    return rt, create_app(rt, registry, load_rules(known_algorithms=registry.refs()))


@dataclasses.dataclass
class Site:
    url: str
    rt: Runtime
    token: str  # a system's bearer token (radsight token add)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, provider_process: Provider) -> Iterator[Site]:
    """Radsight with single sign-on at the provider: two organisations, a study in each,
    a local radiologist with a password and a system token."""
    rt, app = _open_site(tmp_path_factory.mktemp("site") / "data", provider_process.issuer)
    with rt.db.session() as s:
        city = tenants.create_organisation(s, "City Hospital", "North")
        rural = tenants.create_organisation(s, "Rural Clinic", "South")
        auth.create_user(s, city.id, "dr.local", PASSWORD, "radiologist")
        _row, token = auth.create_token(s, "pacs", "radiologist", city.id)
    _study(rt, city.id, "CITY^PATIENT")
    _study(rt, rural.id, "RURAL^PATIENT")
    provider_process.wait_ready()
    try:
        with serving(app) as url:
            yield Site(url, rt, token)
    finally:
        rt.close()


def browser_client() -> httpx.Client:
    return httpx.Client(timeout=10, follow_redirects=True)


def sso_sign_in(client: httpx.Client, url: str, sub: str) -> httpx.Response:
    """Radsight's SSO button -> the provider's form -> 'Authorize' as ``sub``."""
    form = client.get(f"{url}/auth/oidc/login")
    assert form.status_code == 200 and "Authorize" in form.text, form.text[:300]
    return client.post(str(form.url), data={"sub": sub})


def authorize_without_following(client: httpx.Client, url: str, sub: str) -> str:
    """Start at Radsight, authorize at the provider, and return the callback URL unsent."""
    form = client.get(f"{url}/auth/oidc/login")
    answer = client.post(str(form.url), data={"sub": sub}, follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text[:300]
    return answer.headers["location"]


def last_audit(rt: Runtime, action: str) -> Any:
    with rt.db.session() as s:
        row = people.list_audit(s, scope=Scope.ALL, action=action, limit=1)[0]
        s.expunge(row)
        return row


def refusal_reason(page: httpx.Response) -> str:
    found = re.search(r'id="refusal-reason">([a-z_]+)<', page.text)
    assert found, page.text[:500]
    return found.group(1)


# --- signing in ---------------------------------------------------------------------------


def test_a_radiologist_signs_in_through_the_provider_and_sees_their_organisations_worklist(
    site, provider
):
    url, rt = site.url, site.rt
    set_claims(
        provider,
        "ames-4711",
        preferred_username="dr.ames",
        name="Dr Alice Ames",
        roles=["rs-radiologist", "staff"],
        organisation="City Hospital",
    )
    with browser_client() as client:
        signin = client.get(f"{url}/signin")
        assert "Sign in with Test IdP" in signin.text

        done = sso_sign_in(client, url, "ames-4711")
        assert done.status_code == 200 and "Signed in" in done.text
        assert str(done.url).startswith(f"{url}/auth/oidc/callback?")
        cookie = done.headers["set-cookie"].lower()
        assert "radsight_session=" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie and "max-age=43200" in cookie

        worklist = client.get(f"{url}/worklist")
        assert worklist.status_code == 200 and str(worklist.url) == f"{url}/worklist"
        assert "Dr Alice Ames" in worklist.text and "radiologist" in worklist.text
        assert "CITY, PATIENT" in worklist.text
        assert "RURAL" not in worklist.text  # the other organisation's study
        assert client.get(f"{url}/audit").status_code == 403  # a radiologist's role

    with rt.db.session() as s:
        user = people.get_user(s, "dr.ames")
        assert (user.auth_provider, user.external_subject) == ("oidc", f"{provider}|ames-4711")
        assert user.role == "radiologist"
        assert tenants.get_organisation(s, user.organisation_id).name == "City Hospital"
    event = last_audit(rt, "signin")
    assert event.actor == "dr.ames" and event.detail["method"] == "oidc"
    assert event.detail["subject"] == f"{provider}|ames-4711"

    # no password can sign this user in (they have none here)
    with browser_client() as client:
        page = client.get(f"{url}/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        refused = client.post(
            f"{url}/signin",
            data={"username": "dr.ames", "password": "!oidc", "csrf_token": csrf},
        )
        assert refused.status_code == 401 and "wrong username or password" in refused.text


def test_roles_come_from_the_claims_and_a_change_takes_effect_at_the_next_sign_in(site, provider):
    url, rt = site.url, site.rt
    set_claims(
        provider,
        "berg-1",
        preferred_username="it.berg",
        roles="rs-org-admin",  # a single string is a one-value list
        organisation="City Hospital",
    )
    first = browser_client()
    assert sso_sign_in(first, url, "berg-1").status_code == 200
    worklist = first.get(f"{url}/worklist")
    assert 'href="/audit"' in worklist.text and "org admin" in worklist.text
    assert first.get(f"{url}/audit").status_code == 200

    # the hospital's IT moves them to radiologist at Rural Clinic
    set_claims(
        provider,
        "berg-1",
        preferred_username="it.berg",
        roles=["rs-radiologist"],
        organisation="Rural Clinic",
    )
    assert "org admin" in first.get(f"{url}/worklist").text  # until the next sign-in
    with browser_client() as second:
        assert sso_sign_in(second, url, "berg-1").status_code == 200
        worklist = second.get(f"{url}/worklist")
        assert "RURAL, PATIENT" in worklist.text and "CITY" not in worklist.text
        assert 'href="/audit"' not in worklist.text
        assert second.get(f"{url}/audit").status_code == 403
    # the session opened under the old role ended with the change
    stale = first.get(f"{url}/worklist")
    assert str(stale.url).startswith(f"{url}/signin")
    first.close()
    changed = last_audit(rt, "signin").detail
    assert changed["role"] == ["org_admin", "radiologist"]


def test_a_platform_admin_from_the_provider_sees_every_organisation(site, provider):
    url, rt = site.url, site.rt
    set_claims(provider, "ops-1", preferred_username="ops.admin", roles=["rs-platform"])
    with browser_client() as client:
        assert sso_sign_in(client, url, "ops-1").status_code == 200
        worklist = client.get(f"{url}/worklist")
        assert "CITY, PATIENT" in worklist.text and "RURAL, PATIENT" in worklist.text
    with rt.db.session() as s:
        assert people.get_user(s, "ops.admin").organisation_id is None


def test_a_local_account_of_the_same_name_is_never_taken_over(site, provider):
    url, rt = site.url, site.rt
    set_claims(
        provider,
        "impostor-9",
        preferred_username="dr.local",  # a local account's name
        roles=["rs-org-admin"],
        organisation="City Hospital",
    )
    with browser_client() as client:
        assert sso_sign_in(client, url, "impostor-9").status_code == 200
    with rt.db.session() as s:
        local = people.get_user(s, "dr.local")
        assert (local.auth_provider, local.role) == ("local", "radiologist")
        sso = people.find_user_by_subject(s, f"{provider}|impostor-9")
        assert sso is not None and sso.username.startswith("dr.local~")


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "reason", "says"),
    [
        (
            {"roles": ["nurse"], "organisation": "City Hospital"},
            "no_role",
            "none of these is mapped to a role",
        ),
        ({"organisation": "City Hospital"}, "no_role", "holds none"),
        (
            {"roles": ["rs-radiologist"], "organisation": "Elsewhere"},
            "unknown_organisation",
            "Radsight does not know",
        ),
        ({"roles": ["rs-radiologist"]}, "unknown_organisation", "names no single organisation"),
    ],
)
def test_claims_without_a_role_or_a_known_organisation_are_refused(
    site, provider, claims, reason, says
):
    url, rt = site.url, site.rt
    sub = f"refused-{reason}-{len(claims)}"
    set_claims(provider, sub, preferred_username=sub, **claims)
    with browser_client() as client:
        page = sso_sign_in(client, url, sub)
        assert page.status_code == 403
        assert "Sign-in refused" in page.text and says in page.text
        assert refusal_reason(page) == reason
        assert "signin_refused" in page.text
        assert client.get(f"{url}/worklist").url.path == "/signin"  # not signed in
    event = last_audit(rt, "signin.failed")
    assert event.detail["reason"] == reason and event.detail["method"] == "oidc"
    assert event.detail["subject"] == f"{provider}|{sub}"
    with rt.db.session() as s:
        assert people.find_user_by_subject(s, f"{provider}|{sub}") is None


def test_a_callback_with_another_state_or_from_another_browser_is_refused(site, provider):
    url, rt = site.url, site.rt
    set_claims(provider, "state-1", roles=["rs-radiologist"], organisation="City Hospital")
    with browser_client() as client:
        callback = authorize_without_following(client, url, "state-1")
        query = parse_qs(urlsplit(callback).query)
        forged = callback.replace(query["state"][0], "forged-state")
        page = client.get(forged)
        assert page.status_code == 403 and refusal_reason(page) == "state_mismatch"
    with browser_client() as elsewhere:  # the victim's browser never started this sign-in
        page = elsewhere.get(callback)
        assert page.status_code == 403 and refusal_reason(page) == "state_mismatch"
        assert elsewhere.get(f"{url}/worklist").url.path == "/signin"
    assert last_audit(rt, "signin.failed").detail["reason"] == "state_mismatch"


def test_a_code_issued_for_another_sign_in_is_refused_by_its_nonce(site, provider):
    """An attacker's code (their own sign-in, their nonce) pasted into the victim's flow
    with the victim's state: the ID token's nonce is not the one this browser sent."""
    url = site.url
    set_claims(provider, "attacker-1", roles=["rs-org-admin"], organisation="City Hospital")
    with browser_client() as attacker:
        attackers = authorize_without_following(attacker, url, "attacker-1")
    code = parse_qs(urlsplit(attackers).query)["code"][0]
    with browser_client() as victim:
        form = victim.get(f"{url}/auth/oidc/login")  # the victim's state and nonce
        state = parse_qs(urlsplit(str(form.url)).query)["state"][0]
        page = victim.get(f"{url}/auth/oidc/callback?{urlencode({'code': code, 'state': state})}")
        assert page.status_code == 403 and refusal_reason(page) == "invalid_token"
        assert "nonce" in page.text
        assert victim.get(f"{url}/worklist").url.path == "/signin"


def _id_token_from_provider(issuer: str, client_id: str, nonce: str) -> str:
    """A real ID token the provider issues to ``client_id`` (another application)."""
    with httpx.Client(timeout=10) as http:
        authorize = f"{issuer}/oauth2/authorize?" + urlencode(
            {
                "client_id": client_id,
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": "http://127.0.0.1:1/cb",
                "nonce": nonce,
                "state": "s",
            }
        )
        answer = http.post(authorize, data={"sub": "aud-1"})
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        token = http.post(
            f"{issuer}/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": "http://127.0.0.1:1/cb",
            },
            auth=(client_id, "any"),
        )
        return str(token.json()["id_token"])


def test_an_id_token_for_another_audience_or_with_a_broken_signature_is_refused(site, provider):
    rt = site.rt
    set_claims(provider, "aud-1", roles=["rs-platform"])
    client = OidcClient(rt.settings)
    ours = _id_token_from_provider(provider, CLIENT_ID, "n-1")
    assert client.verify_id_token(ours, "n-1")["sub"] == "aud-1"  # the control

    theirs = _id_token_from_provider(provider, "another-application", "n-2")
    with pytest.raises(SignInRefused, match="aud") as refused:
        client.verify_id_token(theirs, "n-2")
    assert refused.value.reason == "invalid_token"

    header, payload, signature = ours.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(SignInRefused, match="not valid"):
        client.verify_id_token(f"{header}.{payload}.{flipped}", "n-1")
    unsigned = f"eyJhbGciOiJub25lIn0.{payload}."  # alg "none"
    with pytest.raises(SignInRefused, match="not valid"):
        client.verify_id_token(unsigned, "n-1")
    with pytest.raises(SignInRefused, match="nonce"):
        client.verify_id_token(ours, "another-nonce")


def test_a_provider_that_cannot_be_reached_gives_a_clear_page(site):
    # the same database and files, with the issuer moved to a port where nothing listens
    closed = f"http://127.0.0.1:{free_port()}"
    settings = site.rt.settings.model_copy(update={"oidc_issuer": closed})
    rt = dataclasses.replace(site.rt, settings=settings)
    registry = Registry.from_entry_points()
    app = create_app(rt, registry, load_rules(known_algorithms=registry.refs()))
    with serving(app) as url, browser_client() as client:
        page = client.get(f"{url}/auth/oidc/login")
        assert page.status_code == 502
        assert "cannot be reached" in page.text
        assert refusal_reason(page) == "provider_unreachable"
        assert "identity_provider_unavailable" in page.text
        assert "Sign in with a Radsight password" in page.text
    event = last_audit(rt, "signin.failed")
    assert event.detail["reason"] == "provider_unreachable"


# --- beside it: tokens, passwords, sign-out -----------------------------------------------


def test_local_tokens_and_passwords_keep_working_beside_single_sign_on(site):
    url, token = site.url, site.token
    with httpx.Client(timeout=10) as http:
        answer = http.get(f"{url}/api/studies", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert http.get(f"{url}/api/studies").status_code == 401
    with browser_client() as client:
        page = client.get(f"{url}/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        done = client.post(
            f"{url}/signin",
            data={"username": "dr.local", "password": PASSWORD, "csrf_token": csrf},
        )
        assert done.status_code == 200 and done.url.path == "/worklist"
        assert "CITY, PATIENT" in done.text


def test_signing_out_ends_the_session_and_signs_out_at_the_provider(site, provider):
    url = site.url
    set_claims(provider, "out-1", roles=["rs-radiologist"], organisation="City Hospital")
    with browser_client() as client:
        assert sso_sign_in(client, url, "out-1").status_code == 200
        worklist = client.get(f"{url}/worklist")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', worklist.text).group(1)  # type: ignore[union-attr]
        page = client.post(f"{url}/signout", data={"csrf_token": csrf})
        assert page.url.path == "/auth/oidc/signed-out" and "signed out of Radsight" in page.text
        logout = re.search(r'content="0;url=([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        logout = logout.replace("&amp;", "&")
        assert logout.startswith(f"{provider}/oauth2/end_session?")
        assert parse_qs(urlsplit(logout).query) == {
            "client_id": [CLIENT_ID],
            "post_logout_redirect_uri": [f"{url}/signin?reason=signed_out"],
        }
        assert client.get(f"{url}/worklist").url.path == "/signin"


def test_the_documented_settings_load():
    """docs/security.md's TOML example is a valid configuration."""
    doc = (REPO / "docs" / "security.md").read_text()
    section = doc[doc.index("## Single sign-on") :]
    start = section.index("```toml\n") + len("```toml\n")
    example = section[start : section.index("```\n", start)]
    settings = Settings(**tomllib.loads(example)["radsight"])
    assert settings.oidc_role_map["radsight-platform"] == "admin"
    assert settings.oidc_roles_claim == "realm_access.roles"


# --- in a real browser --------------------------------------------------------------------


@pytest.mark.slow
def test_single_sign_on_in_chromium(site, provider, browser):
    # Radsight at "localhost", the provider at "127.0.0.1": two sites, as a hospital's
    # Radsight and its Azure AD or Keycloak are, so the browser applies its SameSite rules
    url = site.url.replace("127.0.0.1", "localhost")
    set_claims(
        provider,
        "chromium-1",
        preferred_username="dr.chromium",
        name="Dr Chromium",
        roles=["rs-radiologist"],
        organisation="City Hospital",
    )
    page = browser.new_page(base_url=url)
    page.goto("/signin")
    page.click("#sso-signin")
    page.wait_for_url(re.compile(re.escape(provider) + r"/oauth2/authorize"))
    page.fill("input[name=sub]", "chromium-1")
    page.click("button[type=submit]:has-text('Authorize')")
    page.wait_for_url(f"{url}/worklist")
    assert page.locator(".who-name").inner_text() == "Dr Chromium"
    assert "CITY, PATIENT" in page.content() and "RURAL" not in page.content()

    page.click("#signout")
    page.wait_for_url(re.compile(re.escape(provider) + r"/oauth2/end_session"))
    page.click("button:has-text('End session')")
    page.wait_for_url(f"{url}/signin?reason=signed_out")
    assert "You are signed out" in page.content()
    page.goto("/worklist")
    page.wait_for_url(re.compile(re.escape(url) + r"/signin"))
