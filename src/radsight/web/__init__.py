"""The web app: server-rendered pages, a canvas viewer, no build step.

:func:`create_app` is the whole HTTP application: the API of :mod:`radsight.api` with the
web app installed (:func:`install`): the radiologist's pages, their JSON, the supervisors'
dashboard and algorithm pages, the static files (served from this package; no CDN), the
error page (the API's one error mapping, :mod:`radsight.api.problems`, shows an error as
this page to the pages and to browsers) and the security headers every response carries.
The pages are templates of the one page system, :mod:`radsight.page_system`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from radsight import page_system
from radsight.algorithms.registry import Registry
from radsight.api.app import create_app as create_api
from radsight.pipeline.routing import RuleSet
from radsight.runtime import Runtime
from radsight.web import algorithms, api, dashboard, pages, sso
from radsight.web.common import SignInRequired, error_page, signin_redirect_url

#: no inline script or style, nothing from elsewhere; the viewer's frames are fetched
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: FastAPI's own docs pages load their scripts from a CDN; they keep only the other headers
_DOCS = ("/docs", "/redoc")


def create_app(rt: Runtime, registry: Registry, rules: RuleSet) -> FastAPI:
    """The HTTP application ``radsight serve`` runs: the API and the web app."""
    app = create_api(rt, registry, rules)
    install(app)
    return app


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(sso.router)
    app.include_router(api.router)
    app.include_router(dashboard.router)
    app.include_router(algorithms.router)
    app.mount(page_system.STATIC_URL, StaticFiles(directory=str(page_system.STATIC)), name="static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(signin_redirect_url(exc), status_code=303)

    # errors of the pages (and of a browser asking for HTML) are shown as this page
    app.state.error_page = error_page

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith(_DOCS):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
