"""The runtime install has no torch, flwr or scikit-learn: a command that needs one ends in one
`hybnn: error:` line naming the extra that installs it (scripts/wheel_check.sh checks the same
on a real runtime-only venv built from the wheel)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE = "import sys\nfor m in {mods!r}: sys.modules[m] = None\nfrom hybnn.cli import main\n" \
       "sys.exit(main({argv!r}))\n"


@pytest.mark.parametrize(("missing", "argv", "extra"), [
    (["torch"], ["pretrain", "--data", "digits", "--out", "{tmp}/enc"], "train"),
    (["sklearn"], ["pretrain", "--data", "digits", "--out", "{tmp}/enc"], "train"),
    (["flwr"], ["federate", "--data", "digits", "--out", "{tmp}/fed"], "fed"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, missing, argv, extra):
    argv = [a.format(tmp=tmp_path) for a in argv]
    res = subprocess.run([sys.executable, "-c", HIDE.format(mods=missing, argv=argv)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybnn: error: "), res.stderr
    assert f"pip install 'hybnn[{extra}]'" in lines[0]
    assert not (tmp_path / "enc").exists() and not (tmp_path / "fed").exists()
