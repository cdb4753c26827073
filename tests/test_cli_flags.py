"""The CLI's flags are the api option dataclasses' fields: names, defaults and presets."""

from __future__ import annotations

import pytest

from hybnn import api
from hybnn.cli import build_parser
from hybnn.cli.flags import build, fields_of, given
from hybnn.experiments.config import REPRODUCE_QUICK, ReproduceConfig
from hybnn.pipeline.config import TrainConfig


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
    assert TrainConfig.for_model("hybnn", epochs=7).epochs == 7


def test_code_noise_flag_overrides_the_models_default():
    assert build(api.TrainOptions, parse("train", "--out", "o")).code_noise is None
    opts = build(api.TrainOptions, parse("train", "--out", "o", "--code-noise", "0.05"))
    assert opts.code_noise == 0.05


def test_quick_preset_fills_only_what_the_user_left_out():
    args = parse("reproduce", "--quick", "--head-epochs", "9")
    cfg = ReproduceConfig.make(**given(args, "config__"))
    assert cfg.quick and cfg.head_epochs == 9 and cfg.cnn_epochs == REPRODUCE_QUICK["cnn_epochs"]


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
