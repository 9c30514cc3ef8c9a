"""The rules watcher (pure): a changed, valid file replaces the rules; a broken one is
reported once and leaves them; the file put back clears the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from radsight.pipeline.routing import load_rules
from radsight.pipeline.rules_reload import RulesWatcher, digest_of

KNOWN = {"radsight-bright-region", "radsight-bright-region@1.0.0", "radsight-cxr"}


def rules_text(version: str, algorithm: str = "radsight-bright-region") -> str:
    return (
        f'version: "{version}"\nrules:\n  - name: everything\n    match: {{}}\n'
        f"    algorithms: [{algorithm}]\n"
    )


def write(path: Path, text: str, tick: int) -> None:
    """Write and give the file its own modification time (a clock tick per write)."""
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Path, RulesWatcher]:
    path = tmp_path / "rules.yaml"
    write(path, rules_text("v1"), 1)
    return path, RulesWatcher(path, load_rules(path, KNOWN), KNOWN)


def test_an_untouched_file_is_not_read_again(watched):
    """Modification time and size are the first look: the same pair, no read."""
    path, watcher = watched
    assert watcher.check().outcome == "unchanged"
    write(path, rules_text("v9"), 1)  # same size, same time: not looked into
    assert watcher.check().outcome == "unchanged" and watcher.rules.version == "v1"
    write(path, rules_text("v9"), 2)
    assert watcher.check().rules.version == "v9"


def test_a_touched_file_with_the_same_text_is_not_a_reload(watched):
    path, watcher = watched
    write(path, rules_text("v1"), 2)
    check = watcher.check()
    assert check.outcome == "unchanged" and check.rules.version == "v1"


def test_a_changed_valid_file_replaces_the_rules(watched):
    path, watcher = watched
    before = watcher.rules
    write(path, rules_text("v2", "radsight-cxr"), 2)
    check = watcher.check()
    assert check.outcome == "reloaded" and check.previous is before
    assert check.rules.version == "v2" and check.rules.rules[0].algorithms == ["radsight-cxr"]
    assert check.digest == check.rules.digest == digest_of(rules_text("v2", "radsight-cxr"))
    assert watcher.rules is check.rules and before.version == "v1"  # replaced, not edited
    assert watcher.check().outcome == "unchanged"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("version: [unclosed\n", "is not valid YAML"),
        (
            rules_text("v2", "acme-nothing"),
            "names algorithm 'acme-nothing', which is not registered",
        ),
        (
            'version: "v2"\nrules:\n  - name: x\n    match: {min_row: 3}\n'
            "    algorithms: [radsight-cxr]\n",
            "min_row: Extra inputs are not permitted",
        ),
    ],
)
def test_a_broken_file_keeps_the_rules_and_is_reported_once(watched, text, error):
    path, watcher = watched
    write(path, text, 2)
    check = watcher.check()
    assert check.outcome == "invalid" and error in check.error
    assert check.rules.version == "v1" and watcher.rules.version == "v1"
    write(path, text, 3)  # saved again, still broken: already reported
    assert watcher.check().outcome == "unchanged"
    write(path, rules_text("v1"), 4)  # put back as it was
    assert watcher.check().outcome == "restored"
    assert watcher.check().outcome == "unchanged"


def test_broken_then_fixed_with_new_rules_is_a_reload(watched):
    path, watcher = watched
    write(path, "version: [unclosed\n", 2)
    assert watcher.check().outcome == "invalid"
    write(path, rules_text("v3"), 3)
    check = watcher.check()
    assert check.outcome == "reloaded" and check.rules.version == "v3"


def test_a_deleted_file_is_reported_once(watched):
    path, watcher = watched
    path.unlink()
    check = watcher.check()
    assert check.outcome == "invalid" and "cannot read routing rules" in check.error
    assert watcher.check().outcome == "unchanged" and watcher.rules.version == "v1"
    write(path, rules_text("v4"), 5)
    assert watcher.check().rules.version == "v4"


def test_a_change_before_the_watcher_starts_is_seen_at_its_first_look(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, rules_text("v1"), 1)
    loaded = load_rules(path, KNOWN)  # the server loads the rules, then starts listening
    write(path, rules_text("v2"), 2)  # someone saves meanwhile
    check = RulesWatcher(path, loaded, KNOWN).check()
    assert check.outcome == "reloaded" and check.rules.version == "v2"
