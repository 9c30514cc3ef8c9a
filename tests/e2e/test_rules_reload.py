"""Routing rules changed while ``radsight serve`` runs: a valid file is in force within
seconds, without a restart; a broken one keeps the rules in force and raises an alert,
resolved when the file is fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from radsight.testing.peers import storescu
from tests.conftest import require_tool
from tests.e2e.test_dicom_flow import register, wait_for, write_study

pytestmark = pytest.mark.slow

#: every wait is bounded; the file is looked at every 0.5 s (default 2 s) and a study's
#: quiet period is 0.5 s (default 2 s): each study is one instance
WAIT_S = 30
FAST = {"RADSIGHT_RULES_RELOAD_INTERVAL_S": "0.5", "RADSIGHT_QUIET_PERIODS": '{"cxr": 0.5}'}


def rules(version: str, *, modality: str = "", algorithm: str = "radsight-bright-region") -> str:
    match = f"{{modality: [{modality}]}}" if modality else "{}"
    return (
        f'version: "{version}"\nrules:\n  - name: rule of {version}\n    match: {match}\n'
        f"    algorithms: [{algorithm}]\n"
    )


def replace(path: Path, text: str) -> None:
    """Write the new file beside it and rename it over (what the docs advise)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def test_rules_reload_while_serving(tmp_path, make_server, database_url):
    require_tool("storescu")
    path = tmp_path / "rules.yaml"
    path.write_text(rules("v1"))
    server = make_server(
        workers=1,
        env={"RADSIGHT_DATABASE_URL": database_url, "RADSIGHT_ROUTING_RULES": str(path), **FAST},
    )
    register(server, [])
    server.start()
    pid = server.proc.pid
    sent = 0

    def send() -> dict:
        """Send a new study with storescu; wait until it is routed or not analysed."""
        nonlocal sent
        sent += 1
        study = write_study(tmp_path / f"study{sent}", n=1)
        res = storescu(server.dicom_port, tmp_path / f"study{sent}", calling="MODALITY1")
        assert res.returncode == 0, res.stderr
        uid = str(study[0].StudyInstanceUID)

        def settled() -> dict | None:
            found = [s for s in http.get("/api/studies").json() if s["study_instance_uid"] == uid]
            return found[0] if found and found[0]["state"] not in ("receiving",) else None

        st = wait_for(settled, WAIT_S, f"study {sent} routed")
        if st["state"] != "not_analysed":
            st = wait_for(
                lambda: (
                    (s := http.get(f"/api/studies/{st['id']}").json())["state"] == "analysed" and s
                ),
                WAIT_S * 2,
                f"study {sent} analysed",
            )
        return st

    def health() -> dict:
        return http.get("/health").json()

    def configuration_alerts(open_only: bool) -> list[dict]:
        return http.get(
            "/api/alerts", params={"kind": "configuration", "open_only": open_only}
        ).json()

    with server.http() as http:
        first = health()
        assert first["rules_version"] == "v1"
        st = send()
        assert (st["state"], st["rules_version"]) == ("analysed", "v1")

        # a new version routes CR studies nowhere: in force within seconds, same process
        replace(path, rules("v2", modality="MG"))
        wait_for(lambda: health()["rules_version"] == "v2", WAIT_S, "v2 in /health")
        assert health()["rules_digest"] != first["rules_digest"]
        st = send()
        assert (st["state"], st["rules_version"]) == ("not_analysed", "v2")
        assert "rule 'rule of v2'" in st["state_reason"]

        # bad YAML: v2 stays in force, a configuration alert says what is wrong
        replace(path, 'version: "v3"\nrules: [unclosed\n')
        (alert,) = wait_for(lambda: configuration_alerts(True), WAIT_S, "a configuration alert")
        assert alert["severity"] == "critical" and "is not valid YAML" in alert["message"]
        assert "The rules in force stay: version v2" in alert["message"]
        assert alert["detail"]["path"] == str(path)
        assert health()["rules_version"] == "v2"
        st = send()
        assert (st["state"], st["rules_version"]) == ("not_analysed", "v2")

        # an unknown algorithm: still v2; the open alert now says that
        replace(path, rules("v3", algorithm="acme-nothing"))
        wait_for(
            lambda: "acme-nothing" in configuration_alerts(True)[0]["message"],
            WAIT_S,
            "the alert naming the unknown algorithm",
        )
        assert len(configuration_alerts(True)) == 1 and health()["rules_version"] == "v2"

        # fixed: the new rules are in force and the alert is resolved
        replace(path, rules("v4"))
        wait_for(lambda: health()["rules_version"] == "v4", WAIT_S, "v4 in /health")
        wait_for(lambda: not configuration_alerts(True), WAIT_S, "the alert resolved")
        (resolved,) = configuration_alerts(False)
        assert resolved["id"] == alert["id"] and resolved["resolved_at"]
        st = send()
        assert (st["state"], st["rules_version"]) == ("analysed", "v4")
        reloads = http.get("/api/audit", params={"action": "routing_rules.reload"}).json()
        assert [(e["actor"], e["detail"]["version"]) for e in reloads] == [
            ("radsight", "v4"),
            ("radsight", "v2"),
        ]

    assert server.proc.pid == pid and server.proc.poll() is None, "no restart"
    log = server.log()
    assert "routing rules reloaded: version v2 (" in log
    assert "routing rules reloaded: version v4 (" in log
    assert "not reloaded, the rules in force stay (version v2" in log
