"""Take element values out of third-party messages before they reach a log (pure).

pydicom quotes the offending value in its warnings and exceptions (``Invalid value for VR
DA: '19xx'``, ``invalid literal for int() with base 10: 'Doe^John'``); a value may be a
patient's name, ID or birth date. :func:`redact_values` replaces every quoted literal with
``'…'`` and keeps the rest, which says what was wrong without saying what the value was.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_values"]

REDACTED = "'…'"

# b'...', '...', "..." with backslash escapes, as repr() and f-strings write them
_QUOTED = re.compile(r"""b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*\"""")


def redact_values(text: str) -> str:
    """``text`` with each quoted literal replaced by ``'…'``."""
    return _QUOTED.sub(REDACTED, text)
