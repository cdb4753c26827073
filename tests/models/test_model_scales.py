"""Finite but absurd scales are refused where a model is loaded: the torch loader and the
engine's loader alike, so no command prints a prediction from logits that overflowed."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hybnn.artifacts import save_artifact
from hybnn.cli import main
from hybnn.engine import format as fmt
from hybnn.engine.export import export_artifact, export_model
from hybnn.engine.packed import LOGIT_LIMIT, load
from hybnn.errors import ArtifactError
from hybnn.models import BNNHead
from hybnn.models.io import MODEL_KIND, load_classifier
from hybnn.models.weights import MEAN_LIMIT, SCALE_LIMIT


def learned_head() -> tuple[BNNHead, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = BNNHead(16, 2, (8,), scaling="learned")
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def save_head(directory, model, state):
    save_artifact(directory, MODEL_KIND, state, {"arch": "hybnn", "arch_config": model.config}, {})
    return directory


@pytest.mark.parametrize(("name", "value"), [
    ("net.2.alpha", 3e38),  # the output layer's scale: logits +-inf
    ("net.0.alpha", -3e38),  # a hidden layer's: its batch norm gives NaN
    ("net.1.weight", 1e30), ("net.3.bias", 1e9), ("net.3.running_mean", 1e20),
])
def test_an_absurd_scale_is_refused_at_load(tmp_path, name, value):
    model, state = learned_head()
    state[name].view(-1)[0] = value
    path = save_head(tmp_path / "m", model, state)
    with pytest.raises(ArtifactError, match=rf"{name} holds \|value\| .* above the limit"):
        load_classifier(path)
    with pytest.raises(ArtifactError, match=name):  # the engine export reads through it
        export_artifact(path, tmp_path / "m.engine")


def test_scales_at_the_limit_still_load_and_give_finite_logits(tmp_path):
    model, state = learned_head()
    state["net.2.alpha"].fill_(SCALE_LIMIT)
    state["net.3.weight"].fill_(SCALE_LIMIT)
    state["net.3.running_var"].fill_(0.0)
    state["net.3.running_mean"].fill_(MEAN_LIMIT)
    loaded, _ = load_classifier(save_head(tmp_path / "m", model, state))
    with torch.no_grad():
        logits = loaded.eval()(torch.ones(3, 16))
    assert torch.isfinite(logits).all()


def test_the_engine_refuses_an_output_layer_whose_logits_overflow(tmp_path):
    model, _ = learned_head()
    export_model(model.eval(), tmp_path / "ok.engine")
    header, arrays, _ = fmt.read(tmp_path / "ok.engine")
    alpha = header["layers"][-1]["alpha"]
    arrays[alpha] = np.full_like(arrays[alpha], 3e38)  # finite, and validly stamped
    (tmp_path / "bad.engine").write_bytes(fmt.encode(header, arrays))
    with pytest.raises(ArtifactError, match=re.escape(f"above the limit of {LOGIT_LIMIT:g}")):
        load(tmp_path / "bad.engine")
    load(tmp_path / "ok.engine")


def test_export_of_an_absurd_scale_is_one_error_line(tmp_path, capsys):
    model, state = learned_head()
    state["net.2.alpha"].fill_(3e38)
    path = save_head(tmp_path / "m", model, state)
    rc = main(["export", str(path), "--out", str(tmp_path / "m.engine")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hybnn: error: ") and err.count("\n") == 1, err
    assert "net.2.alpha" in err and not (tmp_path / "m.engine").exists()
