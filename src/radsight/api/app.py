"""The HTTP API (FastAPI). Errors leave as RFC 9457 problems (:mod:`radsight.api.problems`)
from one handler; anything unexpected is caught once, at the top of the request."""

from __future__ import annotations

import logging
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

import radsight
from radsight.algorithms.registry import Registry
from radsight.api.auth import SESSION_COOKIE, get_principal
from radsight.api.body_limit import BodyLimit
from radsight.api.problems import error_response
from radsight.api.routes import people, studies, tenants
from radsight.api.schemas import Health
from radsight.errors import RadsightError
from radsight.pipeline.routing import RuleSet
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import people as peoplestore
from radsight.store.scope import Scope

log = logging.getLogger(__name__)


def create_app(rt: Runtime, registry: Registry, rules: RuleSet) -> FastAPI:
    app = FastAPI(
        title="Radsight",
        version=radsight.__version__,
        description="Open AI radiology platform: studies in, AI results out, quality measured.",
    )
    app.state.runtime = rt
    app.state.registry = registry
    app.state.rules = rules

    @app.exception_handler(RadsightError)
    @app.exception_handler(RequestValidationError)
    async def _error(request: Request, exc: Exception) -> Response:
        return error_response(request, exc)

    # every body bounded (declared or chunked) before any route reads it: docs/security.md
    app.add_middleware(BodyLimit, settings=rt.settings)

    @app.middleware("http")
    async def _summary(request: Request, call_next):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except RadsightError as exc:
            response = error_response(request, exc)
        except Exception as exc:  # the request's one catch-all: a bug, logged once
            log.exception("%s %s failed", request.method, request.url.path)
            response = error_response(request, exc)
        log.info(
            "%s %s -> %d in %.1f ms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - t0) * 1000,
        )
        return response

    @app.get("/health", response_model=Health, response_model_exclude_none=True, tags=["health"])
    async def health(request: Request) -> Health:
        """Up or down for anyone (a load balancer's probe); the details (version, AE title,
        port, job counts, rules) only with a token, a session or the ``metrics_token``."""
        detailed = await _may_see_health(request, rt)
        return await run_in_threadpool(_health, rt, app, detailed)

    if rt.settings.https_cert is not None:
        hsts = "max-age=31536000"

        @app.middleware("http")
        async def _hsts(request: Request, call_next):  # type: ignore[no-untyped-def]
            # served over HTTPS: browsers keep to HTTPS for this host for a year (RFC 6797)
            response = await call_next(request)
            response.headers.setdefault("Strict-Transport-Security", hsts)
            return response

    app.include_router(tenants.router)
    app.include_router(people.router)
    app.include_router(studies.router)
    from radsight.api.routes import dicomweb  # docs/dicomweb.md

    app.include_router(dicomweb.router)
    from radsight.api.routes import monitoring, quality  # docs/quality.md

    app.include_router(quality.router)
    app.include_router(monitoring.router)
    from radsight.api.routes import algorithms  # docs/quality.md, "Admission"

    app.include_router(algorithms.router)

    from radsight.api.routes import reanalyses  # docs/operations.md, "Re-analysis"

    app.include_router(reanalyses.router)
    return app


async def _may_see_health(request: Request, rt: Runtime) -> bool:
    """Credentials were sent: the metrics token, or a token or session (else 401)."""
    sent = request.headers.get("authorization", "")
    metrics_token = rt.settings.metrics_token.get_secret_value()
    if metrics_token and secrets.compare_digest(sent, f"Bearer {metrics_token}"):
        return True
    if not sent and not request.cookies.get(SESSION_COOKIE):
        return False
    await get_principal(request, rt)
    return True


def _health(rt: Runtime, app: FastAPI, detailed: bool) -> Health:
    with rt.db.session() as s:
        if not detailed:
            peoplestore.ping(s)  # up means the database answers too
            return Health(status="ok")
        return Health(
            status="ok",
            version=radsight.__version__,
            ae_title=rt.settings.ae_title,
            dicom_port=getattr(app.state, "dicom_port", rt.settings.dicom_port),
            workers=rt.settings.workers,
            jobs=jobstore.count_by_state(s, scope=Scope.ALL),
            # read at each request: radsight serve swaps in reloaded rules
            rules_version=app.state.rules.version,
            rules_digest=app.state.rules.digest,
        )
