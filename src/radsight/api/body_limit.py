"""Every HTTP request body is bounded, whatever its framing (Content-Length or chunked).

A pure ASGI middleware (:class:`BodyLimit`): a declared Content-Length over the route's
limit is answered 413 before a byte is read; otherwise ``receive`` is wrapped and counts
the bytes as they arrive, and the request is answered 413 once they pass the limit. It runs
before any route, so before sign-in: FastAPI reads a JSON or form body before it resolves
the route's dependencies (the credentials), and an anonymous chunked body must not fill
the memory. The limit is ``max_request_bytes`` for the upload routes (STOW-RS) and
``max_form_bytes`` for every other route (a form, a JSON body).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radsight.api.problems import error_response
from radsight.config import Settings
from radsight.errors import TooLarge

#: the routes that take an upload (STOW-RS); the others take a form or JSON
UPLOAD_ROUTES = re.compile(r"^/dicomweb/studies(/[^/]+)?/?$")


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """The most bytes a request's body may hold, and the setting that says so."""
    if method == "POST" and UPLOAD_ROUTES.match(path):
        return settings.max_request_bytes, "max_request_bytes"
    return settings.max_form_bytes, "max_form_bytes"


class BodyLimit:
    """Answer 413 problem+json ``too_large`` to a body over its route's limit."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, name = body_limit(self.settings, scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # refused before a byte of the body is read
            too_large = TooLarge(
                f"the request body is {declared} bytes, more than {name} ({limit} bytes)"
            )
            await error_response(Request(scope), too_large)(scope, receive, send)
            return
        state: dict[str, Any] = {"received": 0, "started": False}
        refused: list[TooLarge] = []  # the refusal, once the body passed the limit

        async def counted_receive() -> Message:
            if refused:
                raise refused[0]
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    refused.append(
                        TooLarge(
                            f"the request body is more than {name} ({limit} bytes): "
                            "it was cut there"
                        )
                    )
                    raise refused[0]
            return message

        async def guarded_send(message: Message) -> None:
            if refused and not state["started"]:
                return  # the route's own answer to the cut body; ours is sent below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except TooLarge:
            if not refused:
                raise
        if refused and not state["started"]:
            state["started"] = True
            await error_response(Request(scope), refused[0])(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
