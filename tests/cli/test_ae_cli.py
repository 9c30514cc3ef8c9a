"""``radsight ae add/update/list``: allowed hosts and TLS client subjects."""

from __future__ import annotations

from click.testing import CliRunner

from radsight.cli.main import cli


def run(tmp_path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), *args])


def test_allowed_hosts_and_tls_subject(tmp_path):
    assert run(tmp_path, "org", "add", "City Hospital", "--region", "North").exit_code == 0
    res = run(
        tmp_path,
        "ae",
        "add",
        "City Hospital",
        "CT1",
        "--allowed-host",
        "10.1.2.3",
        "--allowed-host",
        "10.9.0.0/16",
    )
    assert (
        res.output.strip()
        == "AE title 'CT1' now sends for 'City Hospital' from 10.1.2.3, 10.9.0.0/16"
    )
    res = run(tmp_path, "ae", "add", "City Hospital", "CT2", "--allowed-host", "ct2.local")
    assert res.exit_code == 1
    assert "error[invalid_input]: allowed host 'ct2.local' is not an IP address" in res.output
    res = run(
        tmp_path,
        "ae",
        "update",
        "City Hospital",
        "CT1",
        "--any-host",
        "--tls-subject",
        "CN=CT1,O=City Hospital",
    )
    assert res.output.strip() == (
        "AE title 'CT1': allowed hosts any address; TLS subject CN=CT1,O=City Hospital"
    )
    out = run(tmp_path, "ae", "list").output
    assert "CN=CT1,O=City Hospital" in out and "any" in out
    res = run(tmp_path, "ae", "update", "City Hospital", "NOPE", "--any-host")
    assert res.exit_code == 1 and "error[not_found]" in res.output
