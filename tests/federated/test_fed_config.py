"""FedConfig refuses every invalid value up front, with one line."""

from __future__ import annotations

import pytest
from local_runs import settings

from hybnn.cli import main
from hybnn.errors import DataError
from hybnn.federated.config import FedConfig

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("batch_size", 0, "--batch-size"), ("batch_size", -8, "--batch-size"),
    ("lr", -1.0, "--lr"), ("lr", NAN, "--lr"), ("lr", INF, "--lr"),
    ("local_epochs", 0, "--local-epochs"), ("rounds", 0, "--rounds"),
    ("alpha", 0.0, "--alpha"), ("alpha", -0.5, "--alpha"), ("alpha", NAN, "--alpha"),
    ("classes_per_client", 0, "--classes-per-client"), ("seed", -1, "--seed"),
    ("round_timeout", NAN, "timeouts"), ("round_timeout", INF, "timeouts"),
    ("node_wait", NAN, "timeouts"), ("node_wait", 0.0, "timeouts"),
    ("fraction", NAN, "--fraction"), ("trim_beta", NAN, "trim beta"),
    ("max_examples", 0, "max examples"), ("hidden", "128,0", "hidden"),
    ("hidden", "64,x", "hidden"),
])
def test_an_invalid_value_is_refused_with_one_line(field, value, flag):
    with pytest.raises(DataError, match=flag) as info:
        settings(**{field: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("encoding", ["1bit", "xor"])
def test_sign_encodings_need_binary_weights(encoding):
    with pytest.raises(DataError, match=f"--encoding {encoding} needs binary weights"):
        FedConfig(model="fpcnn", encoding=encoding)
    assert FedConfig(model="bcnn", encoding=encoding).encoding == encoding


def test_lr_zero_still_means_the_default_and_a_positive_lr_is_kept():
    assert FedConfig(lr=0.0).learning_rate == 1e-2
    assert FedConfig(lr=0.0, model="fpcnn").learning_rate == 1e-3
    assert FedConfig(lr=0.05).learning_rate == 0.05


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--lr", "-1"], ["--lr", "nan"],
                                  ["--alpha", "0"], ["--round-timeout", "nan"]])
def test_federate_refuses_an_invalid_config_before_doing_anything(tmp_path, capsys, args):
    out = tmp_path / "run"
    rc = main(["federate", "--data", "digits", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("hybnn: error: ") and "\n" not in err
    assert args[0] in err or "timeouts" in err
    assert not out.exists()  # nothing pretrained, nothing written


def test_flower_app_run_config_is_fedconfig_defaults():
    # `flwr run --run-config` refuses keys the app does not declare ("Invalid run
    # configuration"): the app's [tool.flwr.app.config] must list every field.
    from hybnn.federated.deploy import APP_DIR

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    app = tomllib.loads((APP_DIR / "pyproject.toml").read_text())
    assert app["tool"]["flwr"]["app"]["config"] == FedConfig().to_record()


def test_groups_check_their_own_settings_and_keep_flat_record_keys():
    from hybnn.federated.config import PrivacyConfig, SecAggConfig

    with pytest.raises(DataError, match="--dp-delta"):
        PrivacyConfig(delta=1.0)
    with pytest.raises(DataError, match="--secagg-threshold"):
        SecAggConfig(enabled=True, shares=3, threshold=3)
    SecAggConfig(shares=2)  # off: its settings are not checked
    cfg = FedConfig(clients=4, dp=PrivacyConfig("local", local_epsilon=0.5))
    record = cfg.to_record()
    assert record["dp"] == "local" and record["local-epsilon"] == 0.5 and "mode" not in record
    assert FedConfig.from_record(record) == cfg
    assert cfg.with_group("secagg", enabled=True).secagg.enabled
    with pytest.raises(ValueError, match="no settings group"):
        cfg.with_group("privacy", mode="none")


def test_an_unknown_setting_is_named_when_strict_and_ignored_from_a_newer_server():
    with pytest.raises(DataError, match=r"noise-multipler \(did you mean noise-multiplier\?\)"):
        FedConfig.from_record({"noise-multipler": 0.5}, strict=True)
    assert FedConfig.from_record({"a-newer-setting": 1, "rounds": 4}).rounds == 4


def test_the_help_lists_each_group_under_its_title(capsys):
    with pytest.raises(SystemExit):
        main(["federate", "--help"])
    out = capsys.readouterr().out
    for title, flag in [("Differential privacy:", "--noise-multiplier"),
                        ("Secure aggregation (Flower's SecAgg+):", "--secagg-shares"),
                        ("Robust aggregation (trimmed mean, Krum, Bulyan):", "--trim-beta")]:
        assert out.index(title) < out.index(f"\n  {flag}")  # its help line, not the usage
