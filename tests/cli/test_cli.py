"""The command line as an administrator uses it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import pytest

from radsight.dicom.synthetic import make_radiograph


def radsight(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RADSIGHT_")}
    full_env["RADSIGHT_DATA_DIR"] = str(tmp_path / "data")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "radsight.cli.main", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tenancy_commands(tmp_path):
    assert radsight(tmp_path, "org", "add", "City Hospital", "--region", "North").returncode == 0
    assert radsight(tmp_path, "ae", "add", "City Hospital", "CT_SCANNER_1").returncode == 0
    res = radsight(
        tmp_path,
        "destination",
        "add",
        "City Hospital",
        "pacs",
        "--ae-title",
        "PACS",
        "--host",
        "10.0.0.5",
        "--port",
        "104",
    )
    assert res.returncode == 0, res.stderr
    orgs = radsight(tmp_path, "org", "list").stdout
    assert "City Hospital" in orgs and "North" in orgs
    assert "CT_SCANNER_1" in radsight(tmp_path, "ae", "list").stdout
    assert "10.0.0.5" in radsight(tmp_path, "destination", "list").stdout


def test_a_destination_over_dicom_tls(tmp_path):
    assert radsight(tmp_path, "org", "add", "City Hospital", "--region", "North").returncode == 0
    add = ["destination", "add", "City Hospital", "pacs", "--ae-title", "PACS"]
    res = radsight(tmp_path, *add, "--host", "10.0.0.5", "--port", "2762", "--tls")
    assert res.returncode == 0, res.stderr
    assert "over TLS, certificate checked for '10.0.0.5'" in res.stdout
    res = radsight(
        tmp_path, "destination", "update", "City Hospital", "pacs", "--tls-server-name", "pacs.city"
    )
    assert res.returncode == 0, res.stderr
    assert "PACS@10.0.0.5:2762 over TLS, certificate checked for 'pacs.city'" in res.stdout
    header, _rule, row = radsight(tmp_path, "destination", "list").stdout.splitlines()
    assert header.split()[-1] == "TLS" and row.split()[-1] == "pacs.city"
    res = radsight(tmp_path, "destination", "update", "City Hospital", "pacs", "--no-tls")
    assert res.returncode == 0 and "over plain DICOM (no TLS)" in res.stdout
    assert radsight(tmp_path, "destination", "list").stdout.splitlines()[2].split()[-1] == "no"
    audit = radsight(tmp_path, "audit", "list").stdout
    assert "destination.update" in audit


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ae", "add", "Nowhere", "X"], "error[not_found]: organisation 'Nowhere' does not exist"),
        (["ae", "add", "City Hospital", "THIS_TITLE_IS_TOO_LONG"], "1-16 characters"),
        (["org", "add", "City Hospital", "--region", "South"], "error[conflict]"),
        (
            [
                "destination",
                "add",
                "City Hospital",
                "p",
                "--ae-title",
                "P",
                "--host",
                "h",
                "--port",
                "70000",
            ],
            "port must be 1-65535",
        ),
        (["rules", "check", "/nonexistent.yaml"], "error[routing_rules_invalid]: cannot read"),
    ],
)
def test_mistakes_get_clear_messages(tmp_path, args, message):
    radsight(tmp_path, "org", "add", "City Hospital", "--region", "North")
    res = radsight(tmp_path, *args)
    assert res.returncode == 1
    assert message in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RADSIGHT_DICOM_PORT": "eleven"}, "RADSIGHT_DICOM_PORT"),
        ({"RADSIGHT_HTTP_PORT": "99999"}, "RADSIGHT_HTTP_PORT"),
        ({"RADSIGHT_WORKERS": "-1"}, "RADSIGHT_WORKERS"),
        ({"RADSIGHT_LOG_FORMAT": "xml"}, "RADSIGHT_LOG_FORMAT"),
        ({"RADSIGHT_CONFIG": "/nonexistent.toml"}, "does not exist"),
    ],
)
def test_bad_settings_fail_fast(tmp_path, env, message):
    res = radsight(tmp_path, "serve", env=env)
    assert res.returncode == 1
    assert message in res.stderr and "error[config_error]" in res.stderr


def test_toml_settings_file(tmp_path):
    cfg = tmp_path / "radsight.toml"
    cfg.write_text("[radsight]\ndicom_port = 11999\nbogus_setting = 1\n")
    res = radsight(tmp_path, "--config", str(cfg), "serve")
    assert res.returncode == 1 and "RADSIGHT_BOGUS_SETTING" in res.stderr


def test_invalid_rules_file_stops_serve(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('version: "1"\nrules: [{name: x, algorithms: [no-such-algorithm]}]\n')
    res = radsight(tmp_path, "serve", env={"RADSIGHT_ROUTING_RULES": str(rules)})
    assert res.returncode == 1
    assert "no-such-algorithm" in res.stderr and "not registered" in res.stderr


def test_import_folder_and_zip_with_progress_and_rejections(tmp_path):
    radsight(tmp_path, "org", "add", "City Hospital", "--region", "North")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        make_radiograph(seed=i).save_as(folder / f"{i}.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not an image")
    res = radsight(tmp_path, "import", str(folder), "--org", "City Hospital")
    assert res.returncode == 1, "a refused file makes the exit status 1"
    assert "3 stored, 0 already there, 1 rejected, 3 studies" in res.stdout
    assert "notes.txt: not_dicom" in res.stdout
    assert "import" in res.stderr and "4/4" in res.stderr, "tqdm progress bar on stderr"

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.glob("*.dcm")):
            zf.write(p, p.name)
        buf = io.BytesIO()
        make_radiograph(seed=9).save_as(buf, enforce_file_format=True)
        zf.writestr("new/9.dcm", buf.getvalue())
    res = radsight(tmp_path, "import", str(archive), "--org", "City Hospital")
    assert "1 stored, 3 already there, 0 rejected" in res.stdout
    assert res.returncode == 0, res.stderr
    assert "not_dicom" in radsight(tmp_path, "rejections").stdout
    studies = radsight(tmp_path, "studies").stdout
    assert studies.count("receiving") == 4


def test_algorithms_and_rules_listing(tmp_path):
    assert "radsight-bright-region" in radsight(tmp_path, "algorithms").stdout
    res = radsight(tmp_path, "rules", "check")
    assert res.returncode == 0 and "valid" in res.stdout
