"""The docs test itself: transcripts parse, wildcards match, and a drifted page fails well."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sybil import Document

from tests.docs import test_docs as harness
from tests.docs.console import matches, page_ports, parse_transcript, run_command

PAGE = """# A page

```console
$ radsight org add "City Hospital" \\
    --region North
organisation 1 'City Hospital' in region 'North'
$ radsight org list
id  name  region
```
"""


def test_a_transcript_splits_into_commands_with_their_output():
    first, second = parse_transcript(PAGE.split("```console\n")[1].split("```")[0], 4)
    assert (first.line, first.text) == (4, 'radsight org add "City Hospital"  --region North')
    assert first.expected == "organisation 1 'City Hospital' in region 'North'"
    assert (second.line, second.expected) == (7, "id  name  region")
    assert (second.output_start, second.output_end) == (4, 5)


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        ("token 1 'ops' (admin)", "token 1 'ops' (admin)  \n\n", True),
        ("rst_...", "rst_AbC-9", True),
        ("a\n...\nz", "a\nb\nc\nz", True),
        ("id  name", "id          name", True),
        ("id  name", "id  nome", False),
        ("a\nz", "a\nb\nz", False),
        ("", "something", False),
    ],
)
def test_wildcards_and_spacing(expected, actual, same):
    assert matches(expected, actual) is same


def test_exports_carry_over_and_radsight_runs_in_the_folder(tmp_path):
    # the PATH and PYTHONPATH a bash-run `radsight` needs (when threads rule out a fork)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    assert run_command("export GREETING=hello", env, tmp_path, []) == ""
    assert run_command("echo $GREETING", env, tmp_path, []) == "hello\n"
    out = run_command('radsight org add "City Hospital" --region North', env, tmp_path, [])
    assert out == "organisation 1 'City Hospital' in region 'North'\n"
    assert (tmp_path / "radsight-data" / "radsight.db").exists()
    # a pipe goes to bash, which finds this interpreter's `radsight` and the same data
    assert run_command("radsight org list | tail -n 1", env, tmp_path, []).split() == [
        "1",
        "City",
        "Hospital",
        "North",
    ]


def _run_page(page: Path, folder: Path) -> None:
    document = Document.parse(str(page), *harness.PARSERS)
    run = harness.PageRun(document, list(document.examples()))
    harness._RUNS[str(page)] = run
    harness.open_page(run, folder)
    folder.mkdir()
    for example in run.examples:
        example.evaluate()


def test_a_drifted_transcript_names_its_line_and_can_be_rewritten(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    monkeypatch.delenv("RADSIGHT_DOCS_UPDATE", raising=False)
    with pytest.raises(harness.DocsMismatch) as failure:
        _run_page(page, tmp_path / "first")
    message = str(failure.value)
    assert f"{page}:7: `$ radsight org list` printed other output" in message
    assert "--- shown in the page:\nid  name  region\n--- printed now:\n" in message
    assert "1   City Hospital  North" in message

    monkeypatch.setenv("RADSIGHT_DOCS_UPDATE", "1")
    _run_page(page, tmp_path / "second")
    harness.apply_rewrites()
    rewritten = page.read_text()
    assert "$ radsight org list\nid  name           region\n" in rewritten
    assert rewritten.endswith("1   City Hospital  North\n```\n")
    monkeypatch.delenv("RADSIGHT_DOCS_UPDATE")
    _run_page(page, tmp_path / "third")  # the page now passes as it is


def test_an_unmarked_shell_block_fails(tmp_path):
    page = tmp_path / "shell.md"
    page.write_text("```bash\nradsight serve\n```\n")
    with pytest.raises(harness.DocsMismatch, match=r"shell\.md:1: a shell block is never run"):
        _run_page(page, tmp_path / "w")


def test_the_default_ports_in_a_command_become_the_page_ports():
    env = {"RADSIGHT_HTTP_PORT": "50001", "RADSIGHT_DICOM_PORT": "50002"}
    assert page_ports("curl -s http://127.0.0.1:8042/health", env) == (
        "curl -s http://127.0.0.1:50001/health"
    )
    assert page_ports("echoscu -aet A -aec RADSIGHT 127.0.0.1 11112", env) == (
        "echoscu -aet A -aec RADSIGHT 127.0.0.1 50002"
    )
    # another host's port, and a destination's --port, stay as written
    assert page_ports("storescu pacs.example.org 11112 a.dcm", env) == (
        "storescu pacs.example.org 11112 a.dcm"
    )
    assert page_ports("radsight destination add X t --port 111120", env) == (
        "radsight destination add X t --port 111120"
    )


def test_wait_for_polls_the_page_server_with_its_token(tmp_path, monkeypatch):
    import http.server
    import json
    import threading

    from tests.docs import live

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps({"state": "analysed" if len(seen) >= 3 else "routed"}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("RADSIGHT_HTTP_PORT", str(server.server_address[1]))
        (tmp_path / "token.txt").write_text("tok-1\n")
        study = live.wait_for("/api/studies/1", lambda s: s["state"] == "analysed")
        assert study == {"state": "analysed"}
        assert seen == ["Bearer tok-1"] * 3
        with pytest.raises(TimeoutError, match="not ready after"):
            live.wait_for("/api/studies/1", lambda s: s["state"] == "failed", timeout=0.6)
    finally:
        server.shutdown()
