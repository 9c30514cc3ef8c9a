"""The HTTP edge of the error tree: every error leaves as one RFC 9457 problem.

:func:`problem_for` is the one mapping from an exception to (status, problem body): a
:class:`~radsight.errors.RadsightError` by its class (``http_status`` and ``code``, the
most specific class wins), FastAPI's request validation as 422 ``validation_error``, and
anything else as 500 ``internal_error`` with no detail of ours (a bug: logged once, with
its traceback, by the caller of :func:`error_response`). :func:`error_response` sends that
problem as ``application/problem+json``, or as an HTML error page (the same status and
code) to a web page's request and to a browser that asks for HTML first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response

from radsight.dicom.multipart import parse_accept
from radsight.errors import RadsightError
from radsight.redact import redact_values

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
INTERNAL_ERROR = "internal_error"
VALIDATION_ERROR = "validation_error"


@dataclass(frozen=True)
class Problem:
    """An error as HTTP shows it (RFC 9457): status, stable code, detail for people."""

    status: int
    code: str
    detail: str

    @property
    def title(self) -> str:
        return self.code.replace("_", " ")

    def to_json(self, instance: str = "") -> dict[str, Any]:
        return {
            "type": f"urn:radsight:error:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "instance": instance,
        }


#: renders a problem as an HTML page; the web app installs it (radsight.web.install)
ErrorPage = Callable[[Request, Problem], Response]


def problem_for(exc: BaseException) -> Problem:
    """The status and problem body for an exception (the one HTTP mapping)."""
    if isinstance(exc, RadsightError):
        return Problem(exc.http_status, exc.code, exc.message)
    if isinstance(exc, RequestValidationError):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return Problem(422, VALIDATION_ERROR, detail)
    return Problem(500, INTERNAL_ERROR, "an internal error occurred; it has been logged")


def wants_html(request: Request) -> bool:
    """A web page's request, or a browser's: ``text/html`` is its first choice."""
    if getattr(request.state, "html_errors", False):
        return True
    accepted = parse_accept(request.headers.get("accept"))
    return bool(accepted) and accepted[0].media_type in ("text/html", "application/xhtml+xml")


def error_response(request: Request, exc: BaseException) -> Response:
    """``exc`` answered as problem+json, or as the web app's error page (same status)."""
    p = problem_for(exc)
    if p.status >= 500 and isinstance(exc, RadsightError):
        # a server-side fault of ours with a code (the bugs are logged by the middleware)
        log.error(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            p.status,
            p.code,
            redact_values(p.detail),  # e.g. a stored object's read error may quote a value
        )
    page: ErrorPage | None = getattr(request.app.state, "error_page", None)
    if page is not None and wants_html(request):
        response = page(request, p)
    else:
        response = JSONResponse(
            p.to_json(str(request.url.path)), status_code=p.status, media_type=PROBLEM_JSON
        )
    retry_after = getattr(exc, "retry_after_s", None)  # TooManyAttempts (RFC 9110 10.2.3)
    if retry_after is not None:
        response.headers["Retry-After"] = str(math.ceil(retry_after))
    return response


def mark_html_errors(request: Request) -> None:
    """A router dependency of the web pages: their errors are shown as pages."""
    request.state.html_errors = True
