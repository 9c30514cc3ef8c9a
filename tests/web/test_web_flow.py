"""The radiologist's web app in real headless Chromium against a real ``radsight serve``.

Studies arrive by dcmtk ``storescu`` and are analysed by the deterministic test
algorithms; a radiologist signs in, works the worklist, opens studies of every type,
toggles the marks, windows the image, gives verdicts, asks for a repeat scan and signs
out. Screenshots of each page go to docs/screenshots/ (docs/web-app.md shows them).
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from playwright import sync_api
from pydicom.uid import generate_uid

from radsight import auth
from radsight.config import load_settings
from radsight.dicom.synthetic import make_ct_slice, make_radiograph
from radsight.runtime import Runtime
from radsight.store.clock import utcnow
from radsight.store.tables import StudyRow, WebSessionRow
from radsight.testing.peers import RadsightProcess, storescu
from tests.conftest import REPO, approve_with_override, require_tool

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "docs" / "screenshots"
XSS_NAME = "<script>alert(1)</script>^<img src=x onerror=alert(2)>"
XSS_DESCRIPTION = "<b onmouseover=alert(3)>Chest</b>"
PASSWORD = "correct horse battery"
MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"

URGENT_PLUGIN = """\
from radsight.algorithms.bright_region import BRIGHT_REGION, BrightRegionAlgorithm
from radsight.algorithms.contract import Code, FindingSpec

class UrgentBrightRegion(BrightRegionAlgorithm):
    name = "test-urgent-bright"
    version = "2.1.0"
    findings = (FindingSpec("bright-region", Code("RS-BRIGHT-U", "99RADSIGHT",
                "Bright region (urgent test finding)"), threshold=0.5, urgent=True),)
"""


def _write_plugin(root: Path) -> Path:
    dist = root / "radsight_web_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: radsight-web-plugins\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[radsight.algorithms]\nurgent = radsight_web_algorithms:UrgentBrightRegion\n"
    )
    (root / "radsight_web_algorithms.py").write_text(URGENT_PLUGIN)
    return root


def _rules(path: Path) -> Path:
    # CT goes to the algorithm whose finding is urgent; everything else to the plain one
    path.write_text(
        textwrap.dedent("""\
        version: "web-test-1"
        rules:
          - name: ct
            match: {modality: [CT]}
            algorithms: [test-urgent-bright]
          - name: projection
            match: {modality: [DX, CR, MG]}
            algorithms: [radsight-bright-region]
        """)
    )
    return path


def _save(folder: Path, datasets: list) -> Path:  # type: ignore[type-arg]
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(datasets):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return folder


def _radiograph(name: str, patient_id: str, spot: object, **kw: object):  # type: ignore[no-untyped-def]
    ds = make_radiograph(patient_id=patient_id, bright_spot=spot, **kw)  # type: ignore[arg-type]
    ds.PatientName = name
    ds.AccessionNumber = f"ACC-{patient_id}"
    return ds


def _studies(root: Path) -> dict[str, Path]:
    plain = _radiograph("PLAIN^PATRICIA", "P-100", None, seed=3)
    spot = _radiograph("SPOT^SIMON", "P-200", (0.3, 0.5, 0.12), seed=4)
    xss = _radiograph(XSS_NAME, "P-300", None, seed=5)
    xss.StudyDescription = XSS_DESCRIPTION
    blank = _radiograph("BLANK^BEN", "P-400", None, seed=6)
    blank.PixelData = np.full((512, 512), 800, np.uint16).tobytes()
    study_uid, series_uid = generate_uid(), generate_uid()
    ct = []
    for i in range(12):
        ds = make_ct_slice(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            index=i,
            patient_id="P-500",
        )
        hu = ds.pixel_array.astype(np.int32)
        yy, xx = np.mgrid[0:256, 0:256]
        hu[(yy - 110) ** 2 + (xx - 150) ** 2 < 14**2] += 60 + 10 * (6 - abs(i - 6))
        ds.PixelData = hu.astype(np.uint16).tobytes()
        ds.PatientName = "CT^CARL"
        ds.SeriesDescription = "Chest 2.5 mm"
        ct.append(ds)
    mg_study = generate_uid()
    mg = []
    for i, (side, view) in enumerate([("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]):
        ds = make_radiograph(
            study_instance_uid=mg_study,
            patient_id="P-600",
            modality="MG",
            view_position=view,
            body_part="BREAST",
            bright_spot=(0.6, 0.5, 0.12) if i == 3 else None,
            seed=10 + i,
            instance_number=i + 1,
        )
        ds.SOPClassUID = MAMMOGRAPHY
        ds.file_meta.MediaStorageSOPClassUID = MAMMOGRAPHY
        ds.ImageLaterality = side
        ds.PatientName = "MAMMO^MARY"
        ds.SeriesDescription = f"{side} {view}"
        mg.append(ds)
    other = _radiograph("OTHER^OSCAR", "P-900", (0.5, 0.5, 0.08), seed=7)
    return {
        "plain": _save(root / "plain", [plain]),
        "spot": _save(root / "spot", [spot]),
        "xss": _save(root / "xss", [xss]),
        "blank": _save(root / "blank", [blank]),
        "ct": _save(root / "ct", ct),
        "mg": _save(root / "mg", mg),
        "other": _save(root / "other", [other]),
    }


class Site:
    def __init__(self, server: RadsightProcess, rt: Runtime) -> None:
        self.server = server
        self.rt = rt
        self.url = server.url

    def study_id(self, patient_id: str) -> int:
        with self.rt.db.session() as s:
            return s.query(StudyRow.id).filter(StudyRow.patient_id == patient_id).one()[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_tool("storescu")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    root = tmp_path_factory.mktemp("web")
    server = RadsightProcess(
        root / "server",
        env={
            "PYTHONPATH": str(_write_plugin(root / "plugins")),
            "RADSIGHT_ROUTING_RULES": str(_rules(root / "rules.yaml")),
        },
    )
    server.start()
    try:
        # the urgent test plug-in ships no evidence: the operator approves it, with a reason
        approve_with_override(server, "test-urgent-bright@2.1.0")
        server.cli("org", "add", "General Hospital", "--region", "North")
        server.cli("ae", "add", "General Hospital", "MODALITY1")
        server.cli("org", "add", "Other Clinic", "--region", "South")
        server.cli("ae", "add", "Other Clinic", "OTHER1")
        rt = Runtime.open(load_settings(None, data_dir=server.data_dir), run_migrations=False)
        with rt.db.session() as s:
            auth.create_user(s, 1, "dr.ames", PASSWORD, "radiologist", "Dr Anna Ames")
            auth.create_user(s, 1, "it.admin", PASSWORD, "org_admin", "Ian Admin")
            auth.create_user(s, 2, "dr.other", PASSWORD, "radiologist", "Dr Otto Other")
        folders = _studies(root / "studies")
        for key in ("plain", "spot", "xss", "blank", "ct", "mg"):
            res = storescu(server.dicom_port, folders[key], calling="MODALITY1")
            assert res.returncode == 0, res.stderr
        assert storescu(server.dicom_port, folders["other"], calling="OTHER1").returncode == 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with rt.db.session() as s:
                states = [st for (st,) in s.query(StudyRow.state)]
            if len(states) == 7 and all(
                st in ("analysed", "not_analysed", "failed") for st in states
            ):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"studies not analysed in time: {states}\n{server.log()[-3000:]}")
        yield Site(server, rt)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator:  # type: ignore[type-arg]
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, site):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=site.url)
    pg = context.new_page()
    dialogs: list[str] = []  # any alert() would be script injection

    def on_dialog(dialog) -> None:  # type: ignore[no-untyped-def]
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))  # type: ignore[attr-defined]
    pg.on("response", lambda r: r.status >= 400 and pg.console_errors.append(f"{r.status} {r.url}"))  # type: ignore[attr-defined]
    yield pg
    assert dialogs == [], f"a dialog fired: {dialogs}"
    context.close()


def sign_in(page, username: str = "dr.ames", password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    page.goto("/signin")
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def wait_loaded(page, count: int = 1) -> None:  # type: ignore[no-untyped-def]
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.viewport[data-loaded=\"true\"]').length >= n",
            arg=count,
            timeout=20_000,
        )
    except sync_api.TimeoutError:
        labels = page.locator(".vp-label").all_inner_texts()
        state = page.evaluate(
            "() => [...document.querySelectorAll('.viewport')].map(v => JSON.stringify(v.dataset))"
        )
        raise AssertionError(f"images not shown: {labels} {state} {page.console_errors}") from None


def marked_pixels(page) -> int:  # type: ignore[no-untyped-def]
    """Pixels of the first viewport drawn in the marks' yellow."""
    return page.evaluate("""() => {
        const c = document.querySelector('.viewport canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] > 200 && d[i + 1] > 160 && d[i + 2] < 110) n++;
        }
        return n;
    }""")


def test_radiologist_reads_the_worklist_and_gives_verdicts(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/worklist")
    assert "/signin" in page.url
    shot(page, "signin")
    sign_in(page, password="not the password")
    assert "wrong username or password" in page.inner_text("#signin-error")
    sign_in(page)
    page.wait_for_url("**/worklist")
    shot(page, "worklist")

    rows = page.query_selector_all("tr.study-row")
    names = [r.query_selector(".patient-name").inner_text() for r in rows]
    assert "OTHER, OSCAR" not in names and len(rows) == 6  # the other clinic's study
    urgent = [r.get_attribute("class").count("is-urgent") == 1 for r in rows]
    assert urgent[0] and urgent == sorted(urgent, reverse=True), names  # urgent first
    assert names[0] == "CT, CARL"
    scores = [
        float(r.query_selector(".score-value").inner_text())
        for r in rows
        if r.query_selector(".score-value") and "is-urgent" not in r.get_attribute("class")
    ]
    assert scores == sorted(scores, reverse=True)
    blank_row = page.locator("tr.study-row", has_text="BLANK, BEN")
    assert "not analysed: " in blank_row.locator(".status").inner_text()
    assert "blank" in blank_row.locator(".status").inner_text()

    page.fill("#filter-q", "P-200")
    page.click("#filters button[type=submit]")
    assert page.locator(".patient-name").all_inner_texts() == ["SPOT, SIMON"]
    page.goto("/worklist?study_type=mmg")
    assert page.locator(".patient-name").all_inner_texts() == ["MAMMO, MARY"]

    # the viewer: image, marks, window/level, zoom
    page.goto("/worklist?q=P-200")
    page.click("a.study-link")
    wait_loaded(page)
    assert page.inner_text("#patient-name") == "SPOT, SIMON"
    assert "radsight-bright-region" in page.inner_text(".result-card h2")
    assert "v1.0.0" in page.inner_text(".result-card h2")
    assert page.locator("tr.finding.is-positive").count() == 1
    vp = page.locator(".viewport").first
    assert int(vp.get_attribute("data-marks-drawn")) >= 1
    with_marks = marked_pixels(page)
    assert with_marks > 50
    shot(page, "viewer")
    page.click("#toggle-marks")
    assert page.inner_text("#toggle-marks") == "AI marks: off"
    assert vp.get_attribute("data-marks-drawn") == "0"
    assert marked_pixels(page) < with_marks / 10
    page.click("#toggle-marks")
    assert vp.get_attribute("data-marks-drawn") != "0"

    before = vp.get_attribute("data-window")
    box = page.locator(".viewport canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=6)
    page.mouse.up()
    page.wait_for_function(
        "w => document.querySelector('.viewport').dataset.window !== w", arg=before
    )
    page.select_option("#wl-preset", "auto")
    page.click("#zoom-in")
    assert "125%" in page.inner_text(".vp-info")

    # verdicts: agree, then change to disagree (a new record supersedes the old)
    page.click("tr.finding button[value=agree]")
    page.wait_for_selector("tr.finding button[value=agree].is-chosen")
    page.click("tr.finding button[value=disagree]")
    page.wait_for_selector("tr.finding button[value=disagree].is-chosen")
    page.click("#study-abnormal")
    page.wait_for_selector("#study-abnormal.is-chosen")
    page.fill("#conclusion", "Rounded opacity, right mid zone. CT advised.")
    page.click("#save-conclusion")
    page.fill("#repeat-reason", "Patient rotated; repeat PA view")
    page.click("#request-repeat")
    page.wait_for_selector("#repeat-current")
    assert page.inner_text("#study-status") == "repeat requested"
    history = page.locator("#history-list li")
    assert history.count() == 5
    superseded = page.locator("#history-list li.is-superseded")
    assert superseded.count() == 1 and "agree" in superseded.inner_text()
    assert "disagree" in history.filter(has_not=page.locator(".superseded")).all_inner_texts()[3]
    assert "Dr Anna Ames" in history.first.inner_text()
    assert "radsight-bright-region v1.0.0" in history.first.inner_text()
    superseded.scroll_into_view_if_needed()
    shot(page, "viewer-verdicts")

    page.goto("/worklist?q=P-200")
    assert page.inner_text("tr.study-row .status") == "repeat requested"
    page.click("#signout")
    page.wait_for_url("**/signin**")
    assert "You are signed out" in page.inner_text("main")
    page.goto("/worklist")
    assert "/signin" in page.url


def test_every_study_type_opens(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    sign_in(page)
    page.goto(f"/studies/{site.study_id('P-500')}")  # CT: 12 slices
    wait_loaded(page)
    assert "test-urgent-bright" in page.inner_text(".result-card h2")
    assert page.locator(".result-card .badge-urgent").count() == 1
    start = page.inner_text("#slice-readout")
    assert start == "Image 7 / 12"
    page.locator(".viewport canvas").first.hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function(
        "() => document.querySelector('#slice-readout').textContent === 'Image 8 / 12'"
    )
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(
        "() => document.querySelector('#slice-readout').textContent === 'Image 6 / 12'"
    )
    page.select_option("#wl-preset", "40,80")
    page.wait_for_function("() => document.querySelector('.viewport').dataset.window === '40/80'")
    wait_loaded(page)
    shot(page, "viewer-ct")

    page.goto(f"/studies/{site.study_id('P-600')}")  # mammography: four views at once
    wait_loaded(page, 4)
    assert page.locator(".viewport").count() == 4
    labels = page.locator(".vp-label").all_inner_texts()
    assert any("L MLO" in t for t in labels) and any("R CC" in t for t in labels)
    shot(page, "viewer-mmg")
    page.locator(".viewport canvas").first.dblclick()
    assert page.locator(".viewport").count() == 1

    page.goto(f"/studies/{site.study_id('P-400')}")  # not analysed: the reason is shown
    wait_loaded(page)
    assert "Not analysed:" in page.inner_text(".not-analysed")
    assert "blank" in page.inner_text(".not-analysed")


def test_dicom_text_is_never_markup(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    sign_in(page)
    page.wait_for_url("**/worklist")
    response = page.goto("/worklist?q=P-300")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    shown = page.inner_text("tr.study-row .patient-name")
    # '=' separates a Person Name's component groups (PS3.5 6.2): shown as " = "
    assert shown == "<script>alert(1)</script>, <img src = x onerror = alert(2)>"
    assert page.locator("tr.study-row img").count() == 0
    page.click("a.study-link")
    wait_loaded(page)
    assert page.inner_text("#patient-name") == shown
    assert page.inner_text("#study-description") == XSS_DESCRIPTION
    assert page.locator(".panel-report b, .panel-report img").count() == 0
    page.hover("#study-description")
    # page fixture: no dialog fired


def test_session_expiry_and_csrf(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    sign_in(page)
    page.wait_for_url("**/worklist")
    study_id = site.study_id("P-100")
    # a request without the CSRF token is refused, from script and from a form
    status = page.evaluate(
        """id => fetch('/api/studies/' + id + '/verdicts', {method: 'POST',
              headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({kind: 'study', value: 'normal'})}).then(r => r.status)""",
        study_id,
    )
    assert status == 403
    page.goto(f"/studies/{study_id}")
    page.evaluate(
        "() => document.querySelectorAll('input[name=csrf_token]').forEach(i => i.value = 'forged')"
    )
    page.click("#study-normal")
    assert "CSRF" in page.inner_text("#error-message")
    with site.rt.db.session() as s:
        assert s.query(StudyRow.review_state).filter(StudyRow.id == study_id).one()[0] == ""
    # with the token it passes
    page.goto(f"/studies/{study_id}")
    token = page.get_attribute("input[name=csrf_token]", "value")
    status = page.evaluate(
        """([id, token]) => fetch('/api/studies/' + id + '/verdicts', {method: 'POST',
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token},
              body: JSON.stringify({kind: 'study', value: 'normal'})}).then(r => r.status)""",
        [study_id, token],
    )
    assert status == 201
    cookie = next(c for c in page.context.cookies() if c["name"] == "radsight_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # the session ends: the next page asks to sign in again
    with site.rt.db.session() as s:
        for row in s.query(WebSessionRow).filter(WebSessionRow.ended_at.is_(None)):
            row.expires_at = utcnow() - timedelta(seconds=1)
    page.goto("/worklist")
    assert "/signin" in page.url
    assert "Your session expired" in page.inner_text("main")


def test_tenancy_and_audit(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    study_id = site.study_id("P-200")
    sign_in(page, "dr.ames", "a wrong password")
    sign_in(page, "dr.ames")
    page.goto(f"/studies/{site.study_id('P-600')}")
    page.click("#study-normal")
    page.wait_for_selector("#study-normal.is-chosen")
    with page.expect_navigation():
        page.click("#signout")
    sign_in(page, "dr.other")
    page.wait_for_url("**/worklist")
    assert page.locator(".patient-name").all_inner_texts() == ["OTHER, OSCAR"]
    assert page.goto(f"/studies/{study_id}").status == 404
    for url in (f"/api/studies/{study_id}/verdicts", "/web/frames/1/0"):
        assert page.evaluate("u => fetch(u).then(r => r.status)", url) == 404
    assert page.goto("/audit").status == 403

    page.context.clear_cookies()
    sign_in(page, "it.admin")
    page.wait_for_url("**/worklist")
    page.goto("/audit")
    rows = page.locator("tr.audit-row")
    actions = rows.evaluate_all("rs => rs.map(r => r.dataset.action)")
    assert {"study.open", "verdict.create", "signin", "signin.failed", "signout"} <= set(actions)
    opened = page.locator("tr.audit-row[data-action='study.open']", has_text="dr.ames")
    assert opened.count() >= 1
    assert "dr.other" not in page.inner_text("#audit")  # the other clinic's trail
    shot(page, "audit")
    events = page.evaluate("() => fetch('/api/audit?action=verdict.create').then(r => r.json())")
    assert events and all(e["actor"] == "dr.ames" for e in events)
    assert "study" in {e["detail"]["kind"] for e in events}
