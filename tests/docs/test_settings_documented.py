"""Every setting has its row in docs/configuration.md, under its environment variable."""

from pathlib import Path

from radsight.config import NOT_SETTINGS, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_in_the_configuration_table():
    text = DOC.read_text()
    missing = [
        name
        for name in Settings.model_fields
        if name not in NOT_SETTINGS and f"| `{name}` | `RADSIGHT_{name.upper()}` |" not in text
    ]
    assert missing == []
