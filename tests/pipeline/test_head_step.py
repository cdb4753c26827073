"""The BNN head's autograd-free training step computes what autograd computes, and Adam's
direct kernel call updates exactly as ``optimizer.step()`` does."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hybnn.models import BinaryCNN, BNNHead
from hybnn.pipeline.adam import adam_step, make_adam
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.head_step import fused_step_for
from hybnn.pipeline.train import fit_classifier


def batch(n: int = 64, bits: int = 40, classes: int = 3, signs: bool = True, seed: int = 0
          ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, bits, generator=g)
    return (torch.where(x >= 0, 1.0, -1.0) if signs else x), torch.randint(0, classes, (n,),
                                                                            generator=g)


@pytest.mark.parametrize("hidden", [(16,), (32, 24), ()])
@pytest.mark.parametrize("signs", [True, False])
def test_one_step_matches_autograd(hidden: tuple[int, ...], signs: bool) -> None:
    x, y = batch(signs=signs)
    torch.manual_seed(1)
    ref = BNNHead(40, 3, hidden).train()
    fused = copy.deepcopy(ref)
    step = fused_step_for(fused, x, signs)
    assert step is not None
    logits_ref = ref(x)
    loss_ref = F.cross_entropy(logits_ref, y)
    loss_ref.backward()
    loss, logits = step(x, y)
    torch.testing.assert_close(loss, loss_ref.detach())
    torch.testing.assert_close(logits, logits_ref.detach())
    for (name, p), q in zip(ref.named_parameters(), fused.parameters(), strict=True):
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    for (name, a), b in zip(ref.named_buffers(), fused.buffers(), strict=True):
        torch.testing.assert_close(b, a, msg=name)


def test_a_negative_zero_weight_counts_as_plus_one_as_in_autograd() -> None:
    x, y = batch()
    torch.manual_seed(1)
    ref = BNNHead(40, 3, (16,)).train()
    with torch.no_grad():
        ref.net[0].weight[:, :5] = -0.0
    fused = copy.deepcopy(ref)
    step = fused_step_for(fused, x, True)
    assert step is not None
    _, logits = step(x, y)
    torch.testing.assert_close(logits, ref(x).detach())


def test_fit_trains_the_same_head_fused_or_through_autograd() -> None:
    x, y = batch(n=256, seed=3)
    torch.manual_seed(2)
    model = BNNHead(40, 3, (32,))
    runs = []
    for fused in (True, False):
        m = copy.deepcopy(model)
        cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, code_noise=0.1, seed=4)
        history = fit_classifier(m, (x, y), None, cfg, progress=False, fused=fused)
        runs.append((m, history.series("train_loss")))
    (a, loss_a), (b, loss_b) = runs
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model", [
    BNNHead(40, 3, (16,), scaling="learned"),
    BNNHead(40, 3, (16,), scaling="xnor"),
    BinaryCNN((8, 8), 1, 3),
])
def test_heads_it_does_not_derive_for_take_autograd(model: torch.nn.Module) -> None:
    assert fused_step_for(model, batch()[0], True) is None


def test_a_gradient_hook_takes_autograd() -> None:
    model = BNNHead(40, 3, (16,))
    model.net[0].weight_grad_hook = lambda g: None
    assert fused_step_for(model, batch()[0], True) is None


def test_inputs_of_another_shape_take_autograd() -> None:
    model = BNNHead(40, 3, (16,))
    assert fused_step_for(model, batch(bits=41)[0], True) is None
    assert fused_step_for(model, batch()[0].view(64, 1, 40), True) is None


def test_adam_step_is_optimizer_step() -> None:
    torch.manual_seed(0)
    a = BNNHead(40, 3, (16,))
    b = copy.deepcopy(a)
    opt_a, opt_b = (make_adam(m, TrainConfig(lr=1e-2, weight_decay=1e-4)) for m in (a, b))
    for i in range(4):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
            q.grad = p.grad.clone()
        opt_a.step()
        adam_step(opt_b)  # the first call builds the state through optimizer.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    for sa, sb in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_adam_step_with_a_missing_gradient_takes_the_plain_step() -> None:
    model = BNNHead(40, 3, (16,))
    opt = make_adam(model, TrainConfig(lr=1e-2))
    params = list(model.parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    adam_step(opt)
    params[0].grad = None
    before = params[0].detach().clone()
    adam_step(opt)  # must not fail; the parameter without a gradient stays
    assert torch.equal(params[0], before)
