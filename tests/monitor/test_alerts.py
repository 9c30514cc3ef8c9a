"""Alerts: to the log, to the dashboard (the alerts table and API) and to a webhook."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from radsight.monitor import alerting
from radsight.store import quality
from radsight.store.scope import Scope

from .conftest import make_org, token


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    """A small local HTTP server: answers 500 to the first N posts, then 204."""
    got: list[dict] = []
    state = {"fail_first": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append(body)
            if state["fail_first"] > 0:
                state["fail_first"] -= 1
                self.send_response(500)
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got, state
    server.shutdown()


def test_alert_goes_to_log_dashboard_and_webhook_with_retries(rt, receiver, caplog, client_for):
    url, got, state = receiver
    rt.settings.alert_webhook_url = url
    state["fail_first"] = 2  # two failures, then accepted on the third attempt
    org = make_org(rt)
    with caplog.at_level(logging.WARNING), rt.db.session() as s:
        row, new = alerting.raise_alert(
            rt,
            s,
            kind="drift",
            key="drift:score:x:1",
            algorithm_name="x",
            algorithm_version="1",
            organisation_id=org,
            message="score has shifted",
        )
        again, new2 = alerting.raise_alert(
            rt, s, kind="drift", key="drift:score:x:1", message="score has shifted"
        )
    assert new and not new2 and again.id == row.id
    assert "quality alert" in caplog.text and "score has shifted" in caplog.text
    counts = alerting.send_pending_webhooks(rt, backoff_s=0.01)
    assert counts == {"sent": 1, "failed": 0} and len(got) == 3
    assert got[-1]["kind"] == "drift" and got[-1]["message"] == "score has shifted"
    client = client_for(rt)
    listed = client.get("/api/alerts", headers=token(rt, "radiologist", org)).json()
    assert listed[0]["webhook_state"] == "sent" and listed[0]["message"] == "score has shifted"
    # another organisation does not see it
    other = make_org(rt, "Rural Clinic", "South")
    assert client.get("/api/alerts", headers=token(rt, "org_admin", other, "b")).json() == []
    r = client.post(f"/api/alerts/{row.id}/resolve", headers=token(rt, "org_admin", org, "c"))
    assert r.status_code == 200 and r.json()["resolved_at"]


def test_a_platform_alert_is_seen_by_every_tenant_but_resolved_by_a_platform_admin_only(
    rt, client_for
):
    org = make_org(rt)
    with rt.db.session() as s:
        row, _ = alerting.raise_alert(
            rt,
            s,
            kind="calibration",
            key="calibration:x:1",
            algorithm_name="x",
            algorithm_version="1",
            message="AUROC below its bar",
        )
    client = client_for(rt)
    admin_of_org = token(rt, "org_admin", org, "o")
    assert [a["id"] for a in client.get("/api/alerts", headers=admin_of_org).json()] == [row.id]
    refused = client.post(f"/api/alerts/{row.id}/resolve", headers=admin_of_org)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert client.get("/api/alerts", headers=admin_of_org).json()[0]["resolved_at"] is None
    done = client.post(f"/api/alerts/{row.id}/resolve", headers=token(rt, "admin", None, "p"))
    assert done.status_code == 200 and done.json()["resolved_at"]


def test_a_dead_webhook_is_recorded_not_raised(rt, receiver):
    url, got, state = receiver
    state["fail_first"] = 99
    rt.settings.alert_webhook_url = url
    rt.settings.alert_webhook_attempts = 2
    with rt.db.session() as s:
        alerting.raise_alert(rt, s, kind="technical", key="k1", message="m1")
    assert alerting.send_pending_webhooks(rt, backoff_s=0.01) == {"sent": 0, "failed": 1}
    rt.settings.alert_webhook_url = "http://127.0.0.1:9/nothing-listens-here"
    with rt.db.session() as s:
        alerting.raise_alert(rt, s, kind="technical", key="k2", message="m2")
    assert alerting.send_pending_webhooks(rt, backoff_s=0.01) == {"sent": 0, "failed": 1}
    with rt.db.session() as s:
        rows = {a.key: a for a in quality.list_alerts(s, scope=Scope.ALL)}
    assert rows["k1"].webhook_state == "failed" and rows["k1"].detail["webhook_error"] == "HTTP 500"
    assert rows["k2"].webhook_state == "failed" and "Connect" in rows["k2"].detail["webhook_error"]
    assert len(got) == 2  # both attempts reached the server


def test_no_webhook_configured_means_log_and_dashboard_only(runtime):
    with runtime.db.session() as s:
        row, _ = alerting.raise_alert(runtime, s, kind="clinical", key="c", message="m")
        assert row.webhook_state == ""
    assert alerting.send_pending_webhooks(runtime) == {"sent": 0, "failed": 0}
    with runtime.db.session() as s, pytest.raises(ValueError, match="alert kind"):
        quality.raise_alert(s, kind="gossip", key="g", message="m")
