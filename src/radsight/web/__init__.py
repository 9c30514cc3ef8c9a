"""The radiologist's web app: server-rendered pages, a canvas viewer, no build step.

:func:`install` adds it to the API application: the pages, their JSON, the static files
(served from this package; no CDN), the error page (the API's one error handler shows an
error as this page to the pages and to browsers) and the security headers every response
carries.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from radsight.web import api, pages
from radsight.web.common import HERE, SignInRequired, error_page, signin_redirect_url

#: no inline script or style, nothing from elsewhere; the viewer's frames are fetched
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: FastAPI's own docs pages load their scripts from a CDN; they keep only the other headers
_DOCS = ("/docs", "/redoc")


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

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
