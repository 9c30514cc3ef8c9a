"""The one place logging is configured: readable lines on a terminal, JSON lines otherwise.

Modules only ``logging.getLogger(__name__)``. Messages carry UIDs, AE titles and
durations, never patient name, ID, birth date or accession number. Third-party libraries
do not know that rule: pydicom quotes an invalid element's value in its warnings, and an
exception's text can carry one. :class:`WithoutElementValues`, on the one handler, takes
every quoted literal out of pydicom's, pynetdicom's and Python warnings' records and out of
every traceback (:func:`radsight.redact.redact_values`); Python warnings are routed into
logging (``logging.captureWarnings``) so that none reaches stderr unfiltered.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from radsight.config import Settings
from radsight.redact import redact_values

#: loggers whose messages may quote an element's value (py.warnings: pydicom's warnings)
THIRD_PARTY = ("pydicom", "pynetdicom", "py.warnings")


class WithoutElementValues(logging.Filter):
    """Remove quoted values from third-party messages and from every traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(THIRD_PARTY):
            record.msg = redact_values(record.getMessage())
            record.args = ()
        if record.exc_info and not record.exc_text:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_values(formatted)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.processName,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(WithoutElementValues())
    root.addHandler(handler)
    logging.captureWarnings(True)
    root.setLevel(settings.log_level)
    # pynetdicom logs every PDU at INFO and dumps data sets (patient data) at DEBUG
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
