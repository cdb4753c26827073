"""The CLI's flags are the api option dataclasses' fields: names, defaults and presets."""

from __future__ import annotations

import dataclasses

import pytest

from hybnn import api
from hybnn.cli import build_parser
from hybnn.cli.flags import build, fields_of, given_settings
from hybnn.errors import DataError
from hybnn.experiments.config import REPRODUCE_QUICK, ReproduceConfig
from hybnn.experiments.continual_config import ContinualConfig
from hybnn.federated.config import FedConfig
from hybnn.pipeline.config import DistillConfig, TrainConfig
from hybnn.pipeline.limits import LIMITS, check_device, check_settings, limit_of


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_train_flags_fill_the_options_and_their_nested_config():
    opts = build(api.TrainOptions, parse("train", "--out", "o", "--seed", "3", "--epochs", "4",
                                         "--hidden", "64", "32", "--no-progress"))
    assert opts.out == "o" and opts.epochs == 4 and opts.hidden == [64, 32]
    assert opts.config.seed == 3 and opts.progress is False
    assert opts.config.batch_size == TrainConfig().batch_size  # untouched: the default


def test_model_defaults_are_resolved_once_from_the_model_spec():
    cfg = TrainConfig.for_model("fpcnn")
    assert (cfg.epochs, cfg.lr) == (15, 1e-3)
    assert TrainConfig.for_model("head", epochs=7).epochs == 7


def test_code_noise_flag_overrides_the_models_default():
    assert build(api.TrainOptions, parse("train", "--out", "o")).code_noise is None
    opts = build(api.TrainOptions, parse("train", "--out", "o", "--code-noise", "0.05"))
    assert opts.code_noise == 0.05


def test_quick_preset_fills_only_what_the_user_left_out():
    args = parse("reproduce", "--quick", "--head-epochs", "9")
    cfg = ReproduceConfig.make(**given_settings(ReproduceConfig, args, "config__"))
    assert cfg.quick and cfg.head.epochs == 9 and cfg.cnn.epochs == REPRODUCE_QUICK["cnn_epochs"]
    assert cfg.vae.samples == REPRODUCE_QUICK["vae_samples"] and cfg.seeds == [0]


@pytest.mark.parametrize("options", [api.PretrainOptions, api.ExtractOptions, api.TrainOptions,
                                     api.EvaluateOptions, api.PredictOptions,
                                     api.ReproduceOptions, api.FederateOptions,
                                     api.StudyOptions])
def test_every_cli_field_has_help(options):
    for path, f, _ in fields_of(options):
        assert f.metadata.get("help"), f"{options.__name__}.{path} has no help text"


def test_required_options_are_required(capsys):
    with pytest.raises(SystemExit):
        parse("extract", "--out", "x.safetensors")
    assert "--encoder" in capsys.readouterr().err


# ------------------------------------------------------------------ limits of every setting

BIG_SEED = "99999999999999999999"

REFUSED = {
    "federate-hidden-1e9": (["federate", "--hidden", "1000000000"], "--hidden"),
    "federate-hidden-0": (["federate", "--hidden", "128,0"], "--hidden"),
    "federate-hidden-too-many-weights": (["federate", "--hidden", "20000,20000"], "--hidden"),
    "federate-seed": (["federate", "--seed", BIG_SEED], "--seed"),
    "federate-rounds": (["federate", "--rounds", "1000000000000"], "--rounds"),
    "federate-clients": (["federate", "--clients", "1000000000"], "--clients"),
    "federate-device": (["federate", "--device", "meta"], "--device"),
    "federate-pretrain-epochs": (["federate", "--pretrain-epochs", "0"], "--pretrain-epochs"),
    "train-seed": (["train", "--out", "o", "--seed", BIG_SEED], "--seed"),
    "train-device": (["train", "--out", "o", "--device", "meta"], "--device"),
    "train-epochs-0": (["train", "--out", "o", "--epochs", "0"], "--epochs"),
    "train-hidden-0": (["train", "--out", "o", "--hidden", "0"], "--hidden"),
    "train-hidden-65": (["train", "--out", "o", "--hidden", *["8"] * 65], "--hidden"),
    "train-lr-huge": (["train", "--out", "o", "--lr", "1e30"], "--lr"),
    "pretrain-seed": (["pretrain", "--seed", BIG_SEED], "--seed"),
    "pretrain-device": (["pretrain", "--device", "meta"], "--device"),
    "pretrain-epochs-huge": (["pretrain", "--epochs", "1000000"], "--epochs"),
    "extract-device": (["extract", "--encoder", "e", "--out", "c", "--device", "meta"],
                       "--device"),
    "distill-device": (["distill", "--encoder", "e", "--device", "meta"], "--device"),
    "distill-width": (["distill", "--encoder", "e", "--width", "100000"], "--width"),
    "evaluate-device": (["evaluate", "--model", "m", "--device", "xla"], "--device"),
    "continual-memory-fraction-nan": (["continual", "--memory-fraction", "nan"],
                                      "--memory-fraction"),
    "continual-epochs-0": (["continual", "--epochs", "0"], "--epochs"),
    "continual-seeds-neg": (["continual", "--seeds", "-1"], "--seeds"),
    "continual-generator-samples": (["continual", "--generator-samples", "1e9"],
                                    "--generator-samples"),
    "reproduce-seeds-neg": (["reproduce", "--seeds", "0", "-1"], "--seeds"),
    "reproduce-head-hidden": (["reproduce", "--head-hidden", "1000000000"], "--head-hidden"),
    "reproduce-max-train-0": (["reproduce", "--max-train", "0"], "--max-train"),
    "study-seeds-neg": (["study", "rebnn", "--seeds", "-1"], "--seeds"),
    "study-threads": (["study", "rebnn", "--threads", "100000"], "--threads"),
    "export-calibration-0": (["export", "m", "--out", "b", "--int8", "--calibration-samples",
                              "0"], "--calibration-samples"),
    "quantize-agreement": (["quantize", "--encoder", "e", "--agreement-samples", "-1"],
                           "--agreement-samples"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_setting_out_of_range_is_one_error_line_before_any_work(case, tmp_path, capsys,
                                                                  monkeypatch):
    from hybnn.cli import main

    monkeypatch.chdir(tmp_path)
    argv, flag = REFUSED[case]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("hybnn: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and flag in err
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


def numeric_fields():
    from hybnn.cli import COMMANDS
    from hybnn.cli.flags import _owner, _unwrap

    options = [o for _, o, _, _ in COMMANDS] + [api.StudyOptions]
    for cls in options:
        for path, f, tp in fields_of(cls):
            if _unwrap(tp)[0] in (int, float) or f.name in LIMITS:
                yield cls, path, f, _owner(cls, path)


def test_every_numeric_flag_has_a_range_shown_in_its_help():
    for cls, path, f, owner in numeric_fields():
        limit = limit_of(owner, f.name)
        assert limit is not None, f"{cls.__name__}.{path} has no entry in LIMITS"
        action = next(a for a in _actions(cls) if a.dest == path.replace(".", "__"))
        assert f"range {limit.short()}" in action.help, (path, action.help)


def _actions(cls):
    import argparse

    from hybnn.cli.flags import add_flags

    parser = argparse.ArgumentParser()
    add_flags(parser, cls)
    return parser._actions


def test_every_default_is_inside_its_range(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_bytes(b"")  # the required paths: options check that they exist
    for cls in {cls for cls, *_ in numeric_fields()}:
        check_settings(cls(**{f.name: "x" for f in dataclasses.fields(cls)
                              if f.default is dataclasses.MISSING
                              and f.default_factory is dataclasses.MISSING}))


@pytest.mark.parametrize(("value", "ok"), [
    (0, True), (2**32 - 1, True), (2**32, False), (-1, False), (1.0, False), (True, False)])
def test_seeds_fit_numpy_and_torch(value, ok):
    assert LIMITS["seed"].accepts(value) is ok


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:13", "mps"])
def test_the_devices_a_run_can_train_on_are_accepted(device):
    check_device(device)


@pytest.mark.parametrize("device", ["meta", "xla", "cuda:", "cuda:-1", "CPU", " cpu", "", None])
def test_other_devices_are_refused(device):
    with pytest.raises(DataError, match="--device must be cpu, cuda, cuda:N or mps"):
        check_device(device)


@pytest.mark.parametrize(("make", "flag"), [
    (lambda: api.TrainOptions(out="o", epochs=0), "--epochs"),
    (lambda: api.TrainOptions(out="o", epochs=2.5), "--epochs"),  # type: ignore[arg-type]
    (lambda: api.TrainOptions(out="o", hidden=128), "--hidden"),  # type: ignore[arg-type]
    (lambda: api.TrainOptions(out="o", config=TrainConfig(seed=-1)), "--seed"),
    (lambda: api.TrainOptions(out="o", config=TrainConfig(epochs=5)),  # silently 100 before
     "set epochs on TrainOptions"),
    (lambda: api.ContinualOptions(config=ContinualConfig(memory_fraction=float("nan"))),
     "--memory-fraction"),
    (lambda: api.FederateOptions(config=FedConfig(rounds=10**12)), "--rounds"),
    (lambda: api.ExportOptions(model="m", out="b", calibration_samples=0),
     "--calibration-samples"),
    (lambda: api.DistillOptions(encoder="e", config=DistillConfig(width=100_000)), "--width"),
])
def test_the_python_api_refuses_the_same_settings_with_the_same_error(make, flag):
    with pytest.raises(DataError, match=flag):
        make()


def test_a_head_too_large_for_its_codes_is_refused_after_reading_the_store(tmp_path):
    import numpy as np

    from hybnn.pipeline.codes import CodeStore, pack_code_bits

    store = CodeStore(pack_code_bits(np.zeros((4, 64_000), bool)), np.arange(4) % 2, 64_000,
                      "a" * 64, {"num_classes": 2})
    codes = store.save(tmp_path / "codes.safetensors")
    with pytest.raises(DataError, match="binary weights, above the limit"):
        api.train(api.TrainOptions(codes=str(codes), out=str(tmp_path / "h"), hidden=[8192],
                                   progress=False))
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize(("command", "config"), [("federate", FedConfig),
                                                 ("reproduce", ReproduceConfig)])
def test_every_setting_of_a_grouped_config_is_a_flag(command, config):
    """Each setting of every group has its flag (a group's field name never hides one)."""
    sub = next(a for a in build_parser()._actions if a.choices and command in a.choices)
    flags = {f for a in sub.choices[command]._actions for f in a.option_strings}
    wanted = {f"--{key}" for path, f, _ in fields_of(config)
              for key in [str(f.metadata.get("flag") or f.name.replace("_", "-")).lstrip("-")]}
    assert wanted <= flags, sorted(wanted - flags)
    assert {"--secagg", "--dp", "--hostile", "--labels"} <= flags or command == "reproduce"


def test_grouped_flags_build_their_groups():
    opts = build(api.FederateOptions, parse("federate", "--secagg", "--clients", "4",
                                            "--secagg-shares", "4", "--trim-beta", "0.1"))
    assert opts.config.secagg.enabled and opts.config.secagg.shares == 4
    assert opts.config.robust.trim_beta == 0.1 and opts.config.dp.mode == "none"
