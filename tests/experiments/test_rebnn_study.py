"""`hybnn study rebnn` end to end in quick mode on the offline digits data, and the
BENCHMARKS.md section `python -m bench.rebnn` writes from its results."""

from __future__ import annotations

import json

import pytest

from bench.common import write_section
from bench.rebnn import section, targets
from hybnn.cli import main
from hybnn.errors import DataError
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


def test_resnet_study_quick_preset_and_refusals():
    cfg = StudyConfig.make(net="resnet18", quick=True, width=4)
    assert cfg.methods == ("ste", "reactnet", "rebnn", "rebnn-const")
    assert cfg.resnet.width == 4 and cfg.resnet.teacher == (False, True)
    assert cfg.resnet.train_size <= 1000 and len(cfg.seeds) == 2
    assert StudyConfig.make(net="resnet18", epochs=5).resnet.epochs == 5
    with pytest.raises(DataError, match=r"--width .* --net resnet18"):
        StudyConfig.make(width=4)
    with pytest.raises(DataError, match="--net must be"):
        StudyConfig.make(net="vgg")


def test_resnet_study_trains_teacher_step1_and_methods_and_reports_targets(tmp_path):
    """A tiny binary ResNet-18 on digits: the float twin once, step 1 per teacher setting,
    step 2 per method; per-layer flips and γ, the flips-per-layer-and-epoch plot, the
    bench's targets and its part of the BENCHMARKS.md section."""
    from bench.rebnn import resnet_section, write_resnet_part
    from hybnn.experiments.rebnn_study import run_study

    cfg = StudyConfig.make(data="digits", net="resnet18", seeds=[0], epochs=2, width=2,
                           train_size=64, test_size=32, teacher_epochs=1, step1_epochs=1)
    out = tmp_path / "study"
    results = run_study(cfg, out, progress=False, log=lambda *_: None)
    assert set(results["models"]) == {"resnet18", "resnet18-kd"}
    assert 0.0 <= results["float_twin"]["acc"] <= 1.0
    for res in results["models"].values():
        assert set(res["methods"]) == set(cfg.methods) and len(res["step1_acc"]) == 1
        for method, r in res["methods"].items():
            assert len(r["flip_ratio_late_layers"]) == 16  # the 16 binary convolutions
            assert all(len(c) == 2 for c in r["flip_curves"].values())
            assert r["train_seconds"] > 0
            assert bool(r["gamma_late_layers"]) == method.startswith("rebnn")
        const = res["methods"]["rebnn-const"]["gamma_late_layers"]
        assert list(const.values()) == pytest.approx([2e-4] * 16)
    assert {p.name for p in (out / "plots").iterdir()} >= {
        "resnet18_flips_per_layer.png", "resnet18-kd_flips_per_layer.png"}
    table = (out / "table.md").read_text()
    assert "| reactnet |" in table and "flip reduction vs reactnet" in table
    assert "| blocks.15.conv |" in table

    found = targets(results)
    names = [t["name"] for t in found]
    assert sum("vs reactnet" in n for n in names) == 8  # 2 families x 2 variants x 2
    assert names[-2].startswith("best binary ResNet-18 test accuracy on digits")
    assert names[-1].startswith("best binary ResNet-18 below its float twin")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n")
    write_resnet_part("cpu", resnet_section(results, "python -m bench.rebnn --net resnet18",
                                            "CPU"), bench)
    text = bench.read_text()
    assert "No GPU run exists yet" in text and "| rebnn-const |" in text
    assert "- Bounds: width 2 (the target's: 64), 64 training" in text
    write_resnet_part("gpu", "### GPU\n\nrows", bench)
    text = bench.read_text()
    assert "No GPU run exists yet" not in text and "rows" in text and "| rebnn-const |" in text


def test_gpu_script_sizes_its_epochs_to_the_budget():
    from bench.rebnn_gpu import plan_epochs

    plan = plan_epochs(540, 5.0, seeds=3, families=1, methods=4)
    used = (plan.teacher_epochs + 3 * (plan.step1_epochs + 4 * plan.epochs)) * 5.0
    assert plan.epochs == 6 and used <= 540
    assert plan_epochs(10, 5.0, 3, 2, 4).epochs == 1  # never below one epoch
    assert plan_epochs(1e9, 0.1, 1, 1, 1).epochs == 40


def test_gpu_script_probe_runs_the_full_width_step_on_the_meta_device():
    """The full-width (64) step-2 ResNet with ReBNN, augmentation and the optimizer step,
    shapes only (no GPU here)."""
    from bench.rebnn_gpu import probe_epoch_seconds

    assert probe_epoch_seconds(64, 60_000, 256, "meta", amp=False, steps=1, warmup=1) > 0


@pytest.mark.slow
def test_gpu_script_on_cpu_at_a_tiny_width(tmp_path):
    """The GPU script's whole path (probe, plan, study, section, --json) with --device cpu,
    bfloat16 autocast left off."""
    from bench.rebnn_gpu import main as gpu_main

    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n")
    rc = gpu_main(["--device", "cpu", "--threads", "1", "--width", "2", "--data", "digits",
                   "--train-size", "64", "--test-size", "32", "--seeds", "0", "--epochs",
                   "1", "--out", str(tmp_path / "gpu"), "--benchmarks", str(bench),
                   "--json", str(tmp_path / "gpu.json")])
    assert rc == 0
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["plan"]["epochs"] == 1 and record["results"]["config"]["resnet"]["width"] == 2
    assert any(t["name"].startswith("resnet18-kd rebnn late flip") for t in record["targets"])
    text = bench.read_text()
    assert "### GPU (cpu, float32)" in text and "No CPU run yet" in text
    # a run elsewhere (--no-write) is merged from its --json file
    other = tmp_path / "OTHER.md"
    assert gpu_main(["--merge", str(tmp_path / "gpu.json"), "--benchmarks", str(other)]) == 0
    assert record["section"] in other.read_text()
