"""The page system: one Jinja2 environment over ``web/templates``, one stylesheet.

Every HTML page Radsight shows is a template that extends ``base.html``: the radiologist's
pages, the supervisors' dashboard (served by :mod:`radsight.web`) and the calibration test
report (written by :mod:`radsight.monitor.html` to the object store and by
``radsight evaluate --out``). They share the header and one stylesheet,
``/static/app.css`` (``web/static``). The pages carry no inline script, style or ``style=``
attribute: the web app's Content-Security-Policy (``style-src 'self'``) would block them.
Charts are PNG data URIs (``img-src data:``).

Autoescape is on for ``.html``: DICOM text (patient names, descriptions) is never markup.
This module imports nothing of Radsight, so any layer may render a page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

WEB = Path(__file__).with_name("web")
TEMPLATES = WEB / "templates"
STATIC = WEB / "static"
#: where the web app serves ``STATIC``; the templates link the stylesheet under it
STATIC_URL = "/static"

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=jinja2.select_autoescape(["html"]),
)


#: the stylesheet link every page carries (``base.html``)
STYLESHEET_LINK = f'<link rel="stylesheet" href="{STATIC_URL}/app.css">'


def standalone(html: str) -> str:
    """A page that keeps its look opened from disk: the stylesheet link becomes the sheet.

    For files written for people to open outside Radsight (``radsight evaluate --out``);
    Radsight itself never serves such a page, since its CSP refuses inline style.
    """
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    return html.replace(STYLESHEET_LINK, f"<style>\n{css}</style>", 1)


def render_page(name: str, **context: Any) -> str:
    """A template of ``web/templates`` rendered to text.

    Parameters
    ----------
    name
        The template's file name, e.g. ``"evaluation_report.html"``.
    **context
        The template's variables.

    Returns
    -------
    str
        The HTML document.
    """
    return environment.get_template(name).render(**context)
