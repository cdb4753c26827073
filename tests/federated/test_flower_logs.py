"""Flower's console log in a redirected log: no ANSI colour codes, no notice of the known
deprecation hybnn chose, every other record kept."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

pytest.importorskip("flwr")


def test_a_redirected_flower_log_is_plain_and_keeps_real_warnings():
    code = """
from flwr.common.logger import log, warn_deprecated_feature
from hybnn.federated.flower_logs import plain_flower_logs
plain_flower_logs()
warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
warn_deprecated_feature("something else")
log(30, "a real warning")
"""
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stderr
    assert "\x1b" not in err
    assert "run_simulation" not in err
    assert "something else" in err and "a real warning" in err


def test_it_is_idempotent():
    from flwr.common.logger import FLOWER_LOGGER

    from hybnn.federated.flower_logs import plain_flower_logs

    plain_flower_logs()
    plain_flower_logs()
    assert sum(isinstance(f, logging.Filter) and type(f).__name__ == "_DropKnownDeprecations"
               for f in FLOWER_LOGGER.filters) == 1
