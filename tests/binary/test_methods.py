"""Training methods by name: the scaling each needs and the callbacks it brings."""

from __future__ import annotations

import pytest

from hybnn.binary.methods import METHODS, method_callbacks, method_scaling
from hybnn.binary.rebnn import ReBNN
from hybnn.models.bnn_head import BNNHead


def test_each_method_names_its_scaling():
    assert METHODS == ("ste", "xnor", "rebnn", "rebnn-const")
    assert [method_scaling(m) for m in METHODS] == ["none", "xnor", "learned", "learned"]


def test_only_rebnn_methods_bring_a_callback_with_their_gamma():
    assert method_callbacks("ste") == [] and method_callbacks("xnor") == []
    (paper,) = method_callbacks("rebnn")
    (const,) = method_callbacks("rebnn-const")
    assert isinstance(paper, ReBNN) and paper.gamma == "paper"
    assert isinstance(const, ReBNN) and const.gamma == "official"


def test_fresh_callbacks_per_call():
    assert method_callbacks("rebnn")[0] is not method_callbacks("rebnn")[0]


def test_model_built_with_another_scaling_is_refused():
    assert method_callbacks("rebnn", BNNHead(8, 2, (4,), scaling="learned"))
    with pytest.raises(ValueError, match="learned"):
        method_callbacks("rebnn", BNNHead(8, 2, (4,), scaling="none"))


def test_unknown_method():
    with pytest.raises(ValueError, match="ste, xnor, rebnn"):
        method_scaling("bnn+")
    with pytest.raises(ValueError):
        method_callbacks("bnn+")
