"""Helpers for the invisible blocks of pages that talk to their own ``radsight serve &``.

The page's server listens on ``RADSIGHT_HTTP_PORT`` (set for every block); a page that
needs a token writes it to ``token.txt`` in its folder (``radsight token add ... >
token.txt``), which these helpers read.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMEOUT_S = 60.0


def get(path: str, *, raw: bool = False) -> Any:
    """``GET path`` on the page's server with the page's token: parsed JSON, or bytes."""
    request = urllib.request.Request(f"http://127.0.0.1:{os.environ['RADSIGHT_HTTP_PORT']}{path}")
    token = Path("token.txt")
    if token.exists():
        request.add_header("Authorization", f"Bearer {token.read_text().strip()}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return body if raw else json.loads(body)


def wait_for(path: str, ready: Callable[[Any], bool], timeout: float = TIMEOUT_S) -> Any:
    """Poll ``GET path`` until `ready` (of its JSON) is true; its JSON then, else TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = get(path)
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.reason}"
        else:
            if ready(last):
                return last
        time.sleep(0.25)
    raise TimeoutError(f"GET {path} not ready after {timeout:.0f} s; last answer: {last!r}")


def save(path: str, filename: str) -> None:
    """Write the body of ``GET path`` (a DICOM file, say) to `filename`."""
    Path(filename).write_bytes(get(path, raw=True))
