"""The supervisors' dashboard in real headless Chromium, under the web app's CSP.

The page must look styled to a browser: the stylesheet's rules apply (a computed style
that only ``/static/app.css`` sets) and the browser refuses nothing (no CSP violation: an
inline ``<style>``, ``style=`` attribute or script would be one). Every template of the
page system is checked for inline style and script as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from radsight import auth, page_system
from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.monitor.admission import register_installed
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.web import create_app
from tests.conftest import REPO, write_rules
from tests.monitor.test_dashboard import add_results
from tests.web.conftest import serving

PASSWORD = "correct horse battery"
SHOT = REPO / "docs" / "quality" / "dashboard.png"  # docs/quality.md shows it


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """``radsight serve``'s HTTP application on a free port, with one supervisor's data."""
    rt = Runtime.open(load_settings(None, data_dir=tmp_path / "data", unsafe_no_fsync=True))
    with rt.db.session() as s:
        org = tenants.create_organisation(s, "City Hospital", "North").id
        region = tenants.get_or_create_region(s, "North").id
        auth.create_user(s, org, "sup.north", PASSWORD, "supervisor", region_id=region)
    add_results(rt, org, "cxr", ["abnormal"] * 3 + ["normal"] * 7)
    add_results(rt, org, "mmg", ["abnormal"] + ["normal"] * 4, algorithm="radsight-mmg")
    registry = Registry.from_entry_points()
    register_installed(rt, registry)  # what the server does at start-up
    rules = load_rules(write_rules(tmp_path / "rules.yaml", ["radsight-bright-region"]))
    try:
        with serving(create_app(rt, registry, rules)) as url:
            yield url
    finally:
        rt.close()


@pytest.mark.slow
def test_dashboard_is_styled_and_the_browser_refuses_nothing(site, browser):
    page = browser.new_page(base_url=site, viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    # the browser reports each refusal of the CSP as this DOM event, too
    page.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto("/dashboard")  # signed out: off to the sign-in page, then back
    page.fill("#username", "sup.north")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{site}/dashboard"
    assert "15 studies analysed, 4 with signs flagged (0 urgent)" in page.inner_text(
        "#dashboard-totals"
    )
    assert page.locator(".charts img").count() == 2
    assert page.locator("#by-study-type tbody tr").all_inner_texts() == [
        "cxr\t10\t3\t0",
        "mmg\t5\t1\t0",
    ]
    # computed styles that only app.css sets: the figures' cell borders, the header's
    # background (#131a23), the active Dashboard link of the shared header
    border = page.eval_on_selector(
        "#by-study-type td",
        "td => [getComputedStyle(td).borderTopStyle, getComputedStyle(td).borderTopWidth]",
    )
    assert border == ["solid", "1px"]
    header = page.eval_on_selector(".topbar", "h => getComputedStyle(h).backgroundColor")
    assert header == "rgb(19, 26, 35)"
    assert page.inner_text(".topbar nav a.active") == "Dashboard"
    # each version's admission state, with a link to its evidence
    mmg = page.locator('#admission tr[data-ref="radsight-mmg@1.1.0"] td').all_inner_texts()
    assert mmg[2:5] == ["SHADOW", "-", "-"]
    shipped = re.fullmatch(r"#(\d+) fails \(n=242, AUROC 0\.648 \(0\.575-0\.720\)\)", mmg[5])
    assert shipped is not None, mmg[5]
    link = page.locator('#admission tr[data-ref="radsight-mmg@1.1.0"] a.evidence')
    assert link.get_attribute("href") == f"/api/evaluations/{shipped[1]}"
    violations = page.evaluate("window.cspViolations")
    refused = [m for m in console if re.search(r"Content Security Policy|Refused to", m)]
    assert violations == [] and refused == [], (violations, console)
    page.screenshot(path=str(SHOT), full_page=True)
    page.close()


#: what the CSP refuses: inline style, inline script (a JSON data block is not run), handlers
INLINE = re.compile(
    r"<style|\sstyle\s*=|\son[a-z]+\s*=|javascript:"
    r"|<script(?![^>]*\s(?:src=|type=\"application/json\"))[^>]*>",
    re.IGNORECASE,
)


@pytest.mark.parametrize("name", sorted(p.name for p in page_system.TEMPLATES.glob("*.html")))
def test_templates_have_no_inline_style_or_script(name):
    """``style-src 'self'; script-src 'self'``: the browser would refuse any of these."""
    text = (page_system.TEMPLATES / name).read_text()
    assert INLINE.findall(text) == []
