"""Code noise: each code bit flipped with a probability in training, a dropout for codes."""

from __future__ import annotations

import pytest
import torch

from hybnn.errors import DataError
from hybnn.models import BNNHead
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import fit_classifier, flip_bits


def codes(n: int = 128, bits: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    proto = torch.randint(0, 2, (bits,), generator=torch.Generator().manual_seed(7)) * 2 - 1
    return proto.float() * (y[:, None] * 2 - 1).float(), y


def test_flip_bits_flips_about_p_of_the_bits_and_keeps_them_binary() -> None:
    x = torch.ones(400, 200)
    torch.manual_seed(0)
    flipped = flip_bits(x, 0.1)
    assert set(flipped.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((flipped == -1).float().mean()) - 0.1) < 0.01
    assert torch.equal(flip_bits(x, 0.0), x)


def test_code_noise_changes_training_and_is_reproducible() -> None:
    x, y = codes()

    def run(noise: float) -> list[float]:
        torch.manual_seed(0)
        model = BNNHead(32, 2, (16,))
        cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, code_noise=noise, seed=1)
        return [e["train_loss"] for e in fit_classifier(model, (x, y), None, cfg,
                                                        progress=False).epochs]

    assert run(0.2) == run(0.2)
    assert run(0.2) != run(0.0)


def test_code_noise_refuses_inputs_that_are_not_codes() -> None:
    x = torch.rand(32, 1, 8, 8)
    y = torch.randint(0, 2, (32,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with pytest.raises(DataError, match="code-noise"):
        fit_classifier(model, (x, y), None, TrainConfig(epochs=1, code_noise=0.1),
                       progress=False)


@pytest.mark.parametrize("bad", [0.5, -0.1, float("nan")])
def test_code_noise_outside_a_probability_is_refused(bad: float) -> None:
    with pytest.raises(DataError, match="--code-noise"):
        TrainConfig(code_noise=bad).validate()
    x, y = codes()
    with pytest.raises(DataError, match="--code-noise"):
        fit_classifier(BNNHead(32, 2, (16,)), (x, y), None, TrainConfig(epochs=1, code_noise=bad),
                       progress=False)


def test_each_model_has_its_own_default() -> None:
    assert TrainConfig.for_model("head").code_noise == 0.1
    assert TrainConfig.for_model("bcnn").code_noise == 0.0
    assert TrainConfig.for_model("head", code_noise=0.0).code_noise == 0.0
