"""A mistyped flag is reported by its subcommand, with that subcommand's usage and the
closest flag it has, not by the top-level parser."""

from __future__ import annotations

import pytest

from hybnn.cli import main


@pytest.mark.parametrize(("argv", "command", "hint"), [
    (["pretrain", "--out", "x", "--epohcs", "3"], "hybnn pretrain", "did you mean --epochs?"),
    (["federate", "--rouds", "3"], "hybnn federate", "did you mean --rounds?"),
    (["study", "rebnn", "--qiuck"], "hybnn study rebnn", "did you mean --quick?"),
    (["export", "m", "--out", "o", "--zzz"], "hybnn export", None),
])
def test_a_mistyped_flag_names_its_subcommand_and_the_closest_flag(argv, command, hint,
                                                                   capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {command}")
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{command}: error: unrecognized arguments:")
    assert (hint in last) if hint else "did you mean" not in last
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize(("argv", "said"), [
    (["trian", "--out", "x"], "unknown command 'trian': did you mean train?"),
    (["train", "--ep", "3", "--out", "x"], "--ep: did you mean --epochs?"),
    (["xyzzy"], "choose from pretrain"),
])
def test_an_abbreviation_or_an_unknown_command_is_refused_with_a_suggestion(argv, said, capsys):
    from hybnn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert said in capsys.readouterr().err
