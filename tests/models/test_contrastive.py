"""The label-free contrastive term: NT-Xent between two views' expected signs."""

from __future__ import annotations

import math

import pytest
import torch

from hybnn.models.contrastive import expected_signs, nt_xent


def test_expected_signs_are_two_p_minus_one():
    logits = torch.tensor([-20.0, -1.0, 0.0, 1.0, 20.0])
    torch.testing.assert_close(expected_signs(logits), 2 * torch.sigmoid(logits) - 1)


def test_matching_views_score_low_and_unrelated_views_near_chance():
    torch.manual_seed(0)
    codes = torch.sign(torch.randn(64, 200))
    matched = nt_xent(codes, codes.clone(), temperature=0.1)
    unrelated = nt_xent(codes, torch.sign(torch.randn(64, 200)), temperature=0.1)
    assert matched < 0.05  # the positive dominates every negative
    # one positive among 2B - 1 candidates, all about as similar: about log(2B - 1)
    assert unrelated == pytest.approx(math.log(127), rel=0.1)


def test_pairing_matters_not_just_the_sets():
    torch.manual_seed(1)
    a = torch.sign(torch.randn(32, 64))
    assert nt_xent(a, a) < nt_xent(a, a.roll(1, dims=0)) - 1.0


def test_gradient_pulls_the_views_together():
    torch.manual_seed(2)
    a = torch.randn(16, 32, requires_grad=True)
    b = (a.detach() + 0.5 * torch.randn(16, 32))
    before = nt_xent(a, b)
    before.backward()
    with torch.no_grad():
        after = nt_xent(a - 0.5 * a.grad, b)
    assert after < before


@pytest.mark.parametrize("shapes", [((4, 8), (4, 9)), ((1, 8), (1, 8)), ((8,), (8,))])
def test_mismatched_or_too_small_views_are_refused(shapes):
    with pytest.raises(ValueError, match="nt_xent needs"):
        nt_xent(torch.zeros(shapes[0]), torch.zeros(shapes[1]))
