"""A real deployment: flower-superlink, 3 flower-supernode processes and `flwr run`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

if shutil.which("flower-superlink") is None:
    pytest.skip("the fed extra (flower-superlink) is not installed", allow_module_level=True)

from hybnn.cli import main
from hybnn.federated.deploy import LocalFederation

pytestmark = pytest.mark.slow


def _running_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run. Zombies do not count: where PID 1 does not
    reap orphans (some containers), a killed server's child stays a zombie forever."""
    running = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            running.append(int(entry))
    return running


def test_three_supernodes_two_rounds_finish_completed(tmp_path, tiny_encoder, monkeypatch,
                                                     capsys):
    """The explicit opt-out, through the CLI: today's --insecure deployment, with a warning.
    The secure default is tests/federated/test_fed_secure.py's."""
    started: list[int] = []
    spawn = LocalFederation._spawn

    def record(self, name, cmd):
        proc = spawn(self, name, cmd)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(LocalFederation, "_spawn", record)
    out = tmp_path / "run"
    assert main(["federate", "--deploy", "--insecure", "--data", "digits", "--task", "0v1",
                 "--clients", "3", "--rounds", "2", "--local-epochs", "1",
                 "--encoder", str(tiny_encoder[0]), "--fraction-evaluate", "0",
                 "--min-clients", "3", "--round-timeout", "120", "--node-wait", "120",
                 "--no-centralized", "--out", str(out)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warning == ["hybnn: warning: --insecure: the SuperLink and SuperNodes run "
                       "without TLS and without SuperNode authentication"]
    res = json.loads((out / "results.json").read_text())
    assert res["security"] == {"tls": False, "supernode_auth": False}
    assert "Uvicorn running on http://127.0.0.1" in (out / "deployment" / "superlink.log"
                                                     ).read_text()
    assert res["run_status"] == "finished:completed"
    assert res["runtime"] == "deployment" and res["status"] == "completed"
    assert [r["round"] for r in res["rounds"]] == [1, 2]
    for r in res["rounds"]:
        assert sorted(c["partition"] for c in r["clients"] if c["status"] == "ok") == [0, 1, 2]
    # The SuperLink's own traffic count agrees with the bytes counted from the messages.
    measured = sum(r["bytes_up"] + r["bytes_down"] for r in res["rounds"])
    assert res["network_traffic"]["total-bytes"] >= 0.9 * measured
    assert len(started) == 4
    assert [p for pgid in started for p in _running_in_group(pgid)] == []
