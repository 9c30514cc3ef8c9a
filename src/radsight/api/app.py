"""The HTTP API (FastAPI). Errors leave as RFC 9457 problem+json, from one handler."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import radsight
from radsight.algorithms.registry import Registry
from radsight.api.deps import SessionDep
from radsight.api.routes import studies, tenants
from radsight.api.schemas import Health
from radsight.errors import RadsightError
from radsight.pipeline.routing import RuleSet
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store.scope import Scope
from radsight.web import install as install_web

log = logging.getLogger(__name__)

#: HTTP status per error code; anything else is a 400 (client) or 500 (ours)
HTTP_STATUS = {
    "not_authenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "not_acceptable": 406,
    "unsupported_media_type": 415,
    "config_error": 422,
    "routing_rules_invalid": 422,
    "storage_error": 503,
    "not_dicom": 400,
    "malformed_dicom": 400,
    "missing_attribute": 400,
    "missing_pixel_data": 400,
    "unsupported_sop_class": 415,
    "sop_class_mismatch": 400,
}


def problem(status: int, code: str, detail: str, instance: str = "") -> JSONResponse:
    return JSONResponse(
        {
            "type": f"urn:radsight:error:{code}",
            "title": code.replace("_", " "),
            "status": status,
            "detail": detail,
            "code": code,
            "instance": instance,
        },
        status_code=status,
        media_type="application/problem+json",
    )


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
    async def _radsight_error(request: Request, exc: RadsightError) -> JSONResponse:
        status = HTTP_STATUS.get(exc.code, 500 if exc.retryable else 400)
        return problem(status, exc.code, exc.message, str(request.url.path))

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return problem(422, "invalid_value", str(exc), str(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return problem(422, "validation_error", detail, str(request.url.path))

    @app.middleware("http")
    async def _summary(request: Request, call_next):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        response = await call_next(request)
        log.info(
            "%s %s -> %d in %.1f ms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - t0) * 1000,
        )
        return response

    @app.get("/health", response_model=Health, tags=["health"])
    def health(s: SessionDep) -> Health:
        return Health(
            status="ok",
            version=radsight.__version__,
            ae_title=rt.settings.ae_title,
            dicom_port=getattr(app.state, "dicom_port", rt.settings.dicom_port),
            workers=rt.settings.workers,
            jobs=jobstore.count_by_state(s, scope=Scope.ALL),
            rules_version=rules.version,
        )

    app.include_router(tenants.router)
    app.include_router(studies.router)
    from radsight.api.routes import dicomweb  # docs/dicomweb.md

    app.include_router(dicomweb.router)
    from radsight.api.routes import monitoring, quality  # docs/quality.md

    app.include_router(quality.router)
    app.include_router(monitoring.router)
    install_web(app)  # the radiologist's web app (pages, static files, headers)
    return app
