"""The README's Python examples run as they are written (a guide that drifts is a bug)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_has_python_examples():
    assert python_blocks(README.read_text())


@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text()))))
def test_a_readme_python_block_runs(index, tmp_path, capsys):
    code = python_blocks(README.read_text())[index]
    cwd = os.getcwd()
    os.chdir(tmp_path)  # whatever the example writes lands here
    try:
        exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__main__"})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion" in out
