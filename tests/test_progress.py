"""Progress: a line per finished step when stderr is not a terminal; silence when asked."""

from __future__ import annotations

from hybnn.progress import bar


def test_a_log_gets_one_line_per_finished_step(capsys, monkeypatch):
    monkeypatch.delenv("HYBNN_NO_PROGRESS", raising=False)  # the suite silences it
    assert list(bar(range(3), "pretrain VAE")) == [0, 1, 2]
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "pretrain VAE: 1/3 (33 %)", "pretrain VAE: 2/3 (66 %)", "pretrain VAE: 3/3 (100 %)"]


def test_no_progress_and_the_environment_silence_it(capsys, monkeypatch):
    assert list(bar(range(2), "x", enabled=False)) == [0, 1]
    monkeypatch.setenv("HYBNN_NO_PROGRESS", "1")
    assert list(bar(range(2), "x")) == [0, 1]
    assert capsys.readouterr().err == ""
