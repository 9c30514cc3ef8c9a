"""The supervisors' algorithm pages in real headless Chromium, under the web app's CSP.

A regional supervisor opens ``/algorithms`` on a fresh install: ``radsight-mmg`` 1.1.0 is
in shadow, its shipped evidence fails the acceptance rule. They try to approve it for
their organisation (refused, the page says why), then approve it with an override and a
written reason through the form, and see it approved there (and still in shadow for the
organisation of the other region) with the history row that keeps the reason. A
radiologist gets 403. The browser refuses nothing. The screenshot goes to
docs/screenshots/ (docs/web-app.md shows it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.monitor.admission import register_installed
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import people, tenants
from radsight.store.scope import Scope
from radsight.web import create_app
from tests.conftest import REPO, shipped_evaluation, write_rules
from tests.web.conftest import serving

PASSWORD = "correct horse battery"
SHOT = REPO / "docs" / "screenshots" / "algorithm.png"
REASON = "Reader study at City Hospital, 300 women: the board accepts it for screening."


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    """``radsight serve``'s HTTP application on a free port, on a fresh install."""
    rt = Runtime.open(load_settings(None, data_dir=tmp_path / "data", unsafe_no_fsync=True))
    registry = Registry.from_entry_points()
    register_installed(rt, registry)  # what the server does at start-up
    with rt.db.session() as s:
        city = tenants.create_organisation(s, "City Hospital", "North")
        tenants.create_organisation(s, "Rural Clinic", "South")
        auth.create_user(s, city.id, "sup.north", PASSWORD, "supervisor", region_id=city.region_id)
        auth.create_user(s, city.id, "dr.ames", PASSWORD, "radiologist")
    rules = load_rules(write_rules(tmp_path / "rules.yaml", ["radsight-bright-region"]))
    try:
        with serving(create_app(rt, registry, rules)) as url:
            yield url, rt
    finally:
        rt.close()


def _sign_in(page: sync_api.Page, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")


def _watch(page: sync_api.Page) -> list[str]:
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return console


@pytest.mark.slow
def test_a_supervisor_approves_a_shadow_version_with_an_override(site, browser):
    url, rt = site
    page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 1000})
    console = _watch(page)
    page.goto("/algorithms")  # signed out: off to the sign-in page, then back
    _sign_in(page, "sup.north")
    assert page.url == f"{url}/algorithms"
    assert page.inner_text(".topbar nav a.active") == "Algorithms"
    row = page.locator('tr[data-ref="radsight-mmg@1.1.0"]')
    assert row.locator(".platform-state").inner_text().strip().lower() == "shadow"
    # a supervisor of North sees North's organisation only
    assert row.locator(".org-state").all_inner_texts() == ["SHADOW"]
    shipped = shipped_evaluation(rt, "radsight-mmg@1.1.0")
    assert (
        row.locator(".evidence-cell")
        .inner_text()
        .startswith(f"#{shipped} fails n=242, AUROC 0.648")
    )
    bright = page.locator('tr[data-ref="radsight-bright-region@1.0.0"]')
    assert bright.locator(".platform-state").inner_text().strip().lower() == "approved"

    with page.expect_navigation():
        row.locator("a.study-link").click()
    assert page.url == f"{url}/algorithms/radsight-mmg/1.1.0"
    assert page.locator("#evidence tr.evaluation-fails").count() == 1
    assert "AUROC 0.648 is below the bar 0.81" in page.inner_text("#evidence")
    # without evidence or an override: refused, and the page says why
    page.select_option("#state-scope", "organisation:City Hospital")
    with page.expect_navigation():
        page.click("#state-approved")
    assert "cannot be approved" in page.inner_text("#algorithm-error")
    assert "242 studies" in page.inner_text("#algorithm-error")
    # with an override and a written reason: approved for City Hospital
    page.select_option("#state-scope", "organisation:City Hospital")
    page.check("#state-override")
    page.fill("#state-reason", REASON)
    with page.expect_navigation():
        page.click("#state-approved")
    assert page.inner_text("#algorithm-done") == (
        "radsight-mmg 1.1.0 is approved for City Hospital (override)"
    )
    org = page.locator('#organisations tr[data-organisation="City Hospital"]')
    assert org.locator(".state").first.inner_text().strip().lower() == "approved"
    newest = page.locator("#history tr.history-row").first
    cells = newest.locator("td").all_inner_texts()
    assert cells[1:] == [
        "sup.north",
        "APPROVED override",
        "organisation City Hospital",
        f"#{shipped}",
        REASON,
    ]
    violations = page.evaluate("window.cspViolations")
    refused = [m for m in console if re.search(r"Content Security Policy|Refused to", m)]
    assert violations == [] and refused == [], (violations, console)
    page.screenshot(path=str(SHOT), full_page=True)
    page.close()
    with rt.db.session() as s:
        [event] = [
            e
            for e in people.list_audit(s, scope=Scope.ALL, action="algorithm.approved")
            if e.actor == "sup.north"
        ]
        assert event.detail["override"] is True and event.detail["reason"] == REASON
        assert event.remote_addr == "127.0.0.1"
    # the list shows it approved for City Hospital, still shadow platform-wide
    page = browser.new_page(base_url=url)
    page.goto("/algorithms")
    _sign_in(page, "sup.north")
    row = page.locator('tr[data-ref="radsight-mmg@1.1.0"]')
    assert row.locator(".org-state").all_inner_texts() == ["APPROVED"]
    assert row.locator(".platform-state").inner_text().strip().lower() == "shadow"
    page.close()


@pytest.mark.slow
def test_a_radiologist_gets_403(site, browser):
    url, _rt = site
    page = browser.new_page(base_url=url)
    page.goto("/algorithms")
    _sign_in(page, "dr.ames")
    assert "supervisors and admins" in page.inner_text("main")
    assert page.locator(".topbar nav a", has_text="Algorithms").count() == 0
    response = page.goto("/algorithms/radsight-mmg/1.1.0")
    assert response is not None and response.status == 403
    page.close()
