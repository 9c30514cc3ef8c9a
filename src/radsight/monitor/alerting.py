"""Alerts leave through three doors: the log, the dashboard (the alerts table) and a
webhook (``alert_webhook_url``: a JSON POST, retried, its state kept on the alert row).

Raising goes through :func:`raise_alert` so that every new alert is logged once; the
webhook is sent by :func:`send_pending_webhooks`, which never raises (a dead webhook must
not stop monitoring) and records ``sent`` or ``failed`` with the last error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from radsight.runtime import Runtime
from radsight.store import Session, quality
from radsight.store.tables import AlertRow

log = logging.getLogger(__name__)


def raise_alert(rt: Runtime, s: Session, **fields: Any) -> tuple[AlertRow, bool]:
    """Open (or find the open) alert and log it when it is new."""
    row, new = quality.raise_alert(s, webhook=bool(rt.settings.alert_webhook_url), **fields)
    if new:
        log.warning(
            "quality alert %s [%s/%s] %s %s: %s",
            row.id,
            row.kind,
            row.severity,
            row.algorithm_name,
            row.algorithm_version,
            row.message,
        )
    return row, new


def alert_payload(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "severity": row.severity,
        "key": row.key,
        "algorithm": {"name": row.algorithm_name, "version": row.algorithm_version},
        "organisation_id": row.organisation_id,
        "message": row.message,
        "detail": row.detail,
        "created_at": row.created_at.isoformat() + "Z",
    }


def send_pending_webhooks(
    rt: Runtime, transport: httpx.BaseTransport | None = None, backoff_s: float = 0.5
) -> dict[str, int]:
    """POST every pending alert; return how many were sent and how many failed."""
    url = rt.settings.alert_webhook_url
    counts = {"sent": 0, "failed": 0}
    if not url:
        return counts
    with rt.db.session() as s:
        pending = [(r.id, alert_payload(r)) for r in quality.alerts_for_webhook(s)]
    if not pending:
        return counts
    with httpx.Client(timeout=rt.settings.alert_webhook_timeout_s, transport=transport) as http:
        for alert_id, payload in pending:
            error = ""
            for attempt in range(rt.settings.alert_webhook_attempts):
                if attempt:
                    time.sleep(backoff_s * 2 ** (attempt - 1))
                try:
                    response = http.post(url, json=payload)
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    continue
                if response.status_code < 300:
                    error = ""
                    break
                error = f"HTTP {response.status_code}"
            state = "failed" if error else "sent"
            counts[state] += 1
            with rt.db.session() as s:
                quality.set_webhook_state(s, alert_id, state, error)
            if error:
                log.error(
                    "alert %d: webhook %s failed after %d attempts: %s",
                    alert_id,
                    url,
                    rt.settings.alert_webhook_attempts,
                    error,
                )
    return counts
