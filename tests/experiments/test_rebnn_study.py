"""`hybnn study rebnn` end to end in quick mode on the offline digits data, and the
BENCHMARKS.md section `python -m bench.rebnn` writes from its results."""

from __future__ import annotations

import json

import pytest

from bench.common import write_section
from bench.rebnn import section, targets
from hybnn.cli import main
from hybnn.experiments.config import StudyConfig


def test_quick_mode_config_is_small():
    cfg = StudyConfig.make(quick=True)
    assert len(cfg.seeds) == 2 and cfg.bcnn_epochs <= 4 and cfg.train_size <= 2000
    assert StudyConfig.make(seeds=[3], epochs=2).seeds == (3,)


@pytest.mark.slow
def test_study_cli_writes_results_table_plots_and_the_bench_section(tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["study", "rebnn", "--data", "digits", "--quick", "--seeds", "0", "--epochs", "2",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    methods = ("ste", "xnor", "rebnn", "rebnn-const")
    assert set(results["models"]) == {"bcnn", "hybnn"}
    assert results["methods"] == results["models"]["bcnn"]["methods"]
    for family in ("bcnn", "hybnn"):
        res = results["models"][family]["methods"]
        assert set(res) == set(methods)
        for r in res.values():
            assert {"acc_mean", "acc_std", "flip_ratio_late"} <= set(r)
            assert 0.0 <= r["acc_mean"] <= 1.0 and 0.0 <= r["flip_ratio_late"] <= 1.0
            assert all(len(c) == 2 for c in r["flip_curves"].values())
    assert results["models"]["bcnn"]["methods"]["rebnn-const"]["gamma_late"] == pytest.approx(2e-4)
    assert len(results["models"]["bcnn"]["methods"]["ste"]["flip_curves"]) == 6
    plots = {p.name for p in (out / "plots").iterdir()}
    assert "bcnn_flip_features_0.png" in plots and "hybnn_flip_net_0.png" in plots
    assert "| rebnn-const |" in (out / "table.md").read_text()
    assert "| ste |" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {"study"}  # no BENCHMARKS.md written
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n<!-- rebnn:start -->\n<!-- rebnn:end -->\n")
    write_section("rebnn", section(results, "python -m bench.rebnn --data digits"), bench)
    text = bench.read_text()
    assert "python -m bench.rebnn --data digits" in text and "| rebnn |" in text
    assert text.count("target (≥2× fewer flips and higher accuracy)") == 4  # 2 families x 2
    assert {t["name"].split()[0] for t in targets(results)} == {"bcnn", "hybnn"}
