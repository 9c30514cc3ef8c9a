"""``radsight-train`` refuses to start without its data and says where it looked."""

from __future__ import annotations

import pytest

from radsight_train.__main__ import MODELS, main


@pytest.mark.parametrize("command", sorted(MODELS))
@pytest.mark.parametrize("evaluate", [False, True])
def test_missing_data_is_a_clear_error(command, evaluate, tmp_path, capsys):
    argv = ["evaluate", command] if evaluate else [command]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--data", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"no {MODELS[command].what} data under {tmp_path / 'nowhere'}" in err
    assert "RADSIGHT_SHARED_DATA" in err
