"""Engine graphs (format version 3): residual binary networks exported through torch.fx.

Exactness, as the engine documents it:

* binary parts are bit-exact: each sign node packs exactly torch's signs of ``x + shift``,
  each binary conv/dense gives exactly ``float32(alpha) * d`` for the integer ±1 dot product
  ``d`` of torch's inputs and weight signs (and exactly torch's signs where batch norm folds
  into thresholds);
* float32 parts, fed torch's own inputs, agree with torch within ``2 (K + 1) u M`` where
  ``u = 2**-24``, ``K`` is the op's reduction length (C k k for a conv, the window for a
  pool) and ``M`` the same op on absolute values (|x|, |w|, |b|); PReLU, add, max pooling,
  flatten and the RSign add are exact;
* classes equal torch's on at least 99.9 % of real test images.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_reference import randomize
from forge import encode, restamp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_engine_fuzz import _edit_arrays, _edit_bytes, _edit_header
from torch import nn

from hybnn.binary.layers import PAD_VALUE, BinaryConv2d, BinaryLayer
from hybnn.binary.quantizers import sign
from hybnn.engine import available_isas, export_model, load, set_isa
from hybnn.engine import format as fmt
from hybnn.engine.graph import GraphModel
from hybnn.engine.graph_export import graph_header
from hybnn.engine.packing import pack_images
from hybnn.errors import ArtifactError, DataError
from hybnn.models import BinaryCNN
from hybnn.models.binary_resnet import BinaryBasicBlock, BinaryResNet, LearnableBias

U = 2.0**-24


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random batch norms, alphas, RSign shifts and PReLU slopes; eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.config = getattr(model, "config", {"scaling": "xnor"})
    randomize(model, seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.mul_(0.1)  # keep a real network's values near zero
            if isinstance(m, LearnableBias):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
    return model.eval()


class BiRealBlock(nn.Module):
    """Bi-Real Net: sign (no learned shift) -> binary 3x3 -> BN, + shortcut, then PReLU."""

    def __init__(self, cin: int, cout: int, stride: int, scaling: str) -> None:
        super().__init__()
        self.conv = BinaryConv2d(cin, cout, 3, stride, 1, scaling=scaling)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride, ceil_mode=True)
                                          if stride > 1 else nn.Identity(),
                                          nn.Conv2d(cin, cout, 1, bias=False),
                                          nn.BatchNorm2d(cout))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class Blocks(nn.Module):
    """A float stem, residual blocks, global pooling and a float classifier."""

    def __init__(self, cin: int, width: int, plan: list[tuple[int, int]], kind: str,
                 scaling: str, stem: str) -> None:
        super().__init__()
        self.stem = (nn.Sequential(nn.Conv2d(cin, width, 7, 2, 3, bias=False),
                                   nn.BatchNorm2d(width), nn.MaxPool2d(3, 2, 1))
                     if stem == "imagenet" else
                     nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1), nn.BatchNorm2d(width)))
        blocks, c = [], width
        for out, stride in plan:
            blocks.append(BinaryBasicBlock(c, out, stride, scaling) if kind == "reactnet"
                          else BiRealBlock(c, out, stride, scaling))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _record(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[tuple, torch.Tensor]]:
    """Every module's (inputs, output) of one forward pass, by qualified name."""
    seen: dict[str, tuple[tuple, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i, o)))
             for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _d(layer: BinaryLayer, x: torch.Tensor) -> torch.Tensor:
    """The exact integer ±1 dot products of a binary layer's input (float64)."""
    s, w = sign(x).double(), sign(layer.weight).double()
    if isinstance(layer, BinaryConv2d):
        p = layer.padding
        return F.conv2d(F.pad(s, (p,) * 4, value=PAD_VALUE), w, stride=layer.stride)
    return F.linear(s.flatten(1), w)


@torch.no_grad()
def _magnitude(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(the op on absolute values in float64, its reduction length) of a float module."""
    a = x.double().abs()
    if isinstance(m, nn.Conv2d):
        b = None if m.bias is None else m.bias.double().abs()
        return F.conv2d(a, m.weight.double().abs(), b, m.stride, m.padding), m.weight[0].numel()
    if isinstance(m, nn.Linear):
        b = None if m.bias is None else m.bias.double().abs()
        return F.linear(a, m.weight.double().abs(), b), m.in_features
    if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
        shape = (1, -1, 1, 1) if a.ndim == 4 else (1, -1)
        scale = (m.weight / torch.sqrt(m.running_var + m.eps)).double().abs().reshape(shape)
        return a * scale + (m(x) - x * scale).double().abs(), 2
    if isinstance(m, nn.AvgPool2d):
        k = m.kernel_size
        return F.avg_pool2d(a, k, m.stride, m.padding, m.ceil_mode), k * k
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return a.mean((2, 3), keepdim=True), a.shape[2] * a.shape[3]
    return torch.zeros(out.shape, dtype=torch.float64), 0  # exact: PReLU, max pool, RSign add


def _check_nodes(model: nn.Module, engine: GraphModel, x: torch.Tensor) -> int:
    """Each node fed torch's inputs against torch's output; returns the nodes checked."""
    seen = _record(model, x)
    checked = 0
    for node in engine.nodes:
        m = model.get_submodule(node.name) if node.name in seen else None
        if m is None:
            continue
        (inp,), out = seen[node.name]
        src = node.inputs[0]
        shape = engine.input_shape if src < 0 else engine.nodes[src].out.shape
        flat = inp.reshape(-1, *shape)  # the engine's (C, H, W) of a torch (N, features)
        if node.op == "sign":  # a LearnableBias folded into the sign: exact
            got = engine.run_node(node.name, [inp.numpy()])
            np.testing.assert_array_equal(got, _pack(out))
        elif node.op in ("bconv2d", "bdense"):
            assert isinstance(m, BinaryLayer)
            src = node.inputs[0]
            shape = engine.input_shape if src < 0 else engine.nodes[src].out.shape
            bits = _pack(inp.reshape(-1, *shape))
            got = engine.run_node(node.name, [bits])
            d = _d(m, inp).to(torch.float32).numpy()
            if node.params["mode"] == "float":
                want = d * node.arrays["alpha"].reshape((1, -1) + (1,) * (d.ndim - 2))
                np.testing.assert_array_equal(got.reshape(want.shape), want)
            else:  # thresholds: the signs torch takes after the batch norm
                bn_out = seen[_bn_after(seen, node.name)][1]
                np.testing.assert_array_equal(got, _pack(bn_out))
        else:
            got = engine.run_node(node.name, [flat.numpy()]).reshape(out.shape)
            mag, k = _magnitude(m, inp, out)
            err = np.abs(got.astype(np.float64) - out.double().numpy())
            bound = 2 * (k + 1) * U * mag.numpy()
            assert (err <= bound).all(), (node.name, float((err - bound).max()))
        checked += 1
    return checked


def _pack(t: torch.Tensor) -> np.ndarray:
    """Packed signs of NCHW or (N, features) torch values."""
    return pack_images(t.reshape(*t.shape, *(1,) * (4 - t.ndim)).numpy())


def _bn_after(seen: dict[str, tuple[tuple, torch.Tensor]], name: str) -> str:
    """The module that finished right after ``name`` (its batch norm)."""
    order = list(seen)
    return order[order.index(name) + 1]


def _export(model: nn.Module, shape: tuple[int, int, int], path) -> GraphModel:
    header, arrays = graph_header(model, shape)
    fmt.write(path, header, arrays)
    engine = load(path)
    assert isinstance(engine, GraphModel)
    return engine


# ---- blocks of every stride and shortcut kind ---------------------------------------------
PLANS = {
    "identity": [(0, 1), (0, 1)],  # same channels, stride 1: x + f(x)
    "channels": [(1, 1)],  # more channels at stride 1: 1x1 conv shortcut
    "stride2": [(1, 2), (1, 1)],  # stride 2: 2x2 average pool, 1x1 conv, batch norm
    "stride2-same-width": [(0, 2)],
}


@pytest.mark.parametrize("kind", ["reactnet", "bireal"])
@pytest.mark.parametrize("plan", sorted(PLANS))
@pytest.mark.parametrize("seed", [0, 1])
def test_blocks_are_bit_exact_in_binary_parts_and_bounded_in_float_parts(tmp_path, kind,
                                                                         plan, seed):
    rng = np.random.default_rng(seed * 7 + len(plan))
    width = int(rng.integers(1, 80))
    size = int(rng.integers(5, 16))  # odd sides exercise ceil_mode pooling
    scaling = ["none", "xnor", "learned"][seed % 3 if kind == "reactnet" else (seed + 1) % 3]
    stem = "imagenet" if seed else "cifar"
    cin = int(rng.integers(1, 4))
    blocks = [(width * (1 + grow), stride) for grow, stride in PLANS[plan]]
    torch.manual_seed(seed)
    model = _randomize(Blocks(cin, width, blocks, kind, scaling, stem), seed)
    side = size * 4 if stem == "imagenet" else size
    engine = _export(model, (cin, side, side), tmp_path / "m.engine")
    x = torch.randn(6, cin, side, side)
    assert _check_nodes(model, engine, x) >= 4 + 3 * len(blocks)
    with torch.no_grad():
        want = model(x).numpy()
    got = engine.logits(x.numpy())
    assert (got.argmax(1) == want.argmax(1)).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    _assert_fused_equals_node_by_node(engine, x.numpy())


def _assert_fused_equals_node_by_node(engine: GraphModel, x: np.ndarray) -> None:
    """The fused plan (compiled epilogues) leaves every value it outputs exactly as the
    node-by-node numpy run computes it, on every ISA and thread count."""
    assert engine._plan is not None and any(step.fused for step in engine._plan)
    try:
        for name in available_isas():
            set_isa(name)  # float convolutions round differently per ISA (FMA or not)
            want = engine.run(x, keep=True, fused=False)
            for threads in (1, 3):
                got = engine.run(x, threads=threads, keep=True)
                assert np.array_equal(got[engine._output], want[engine._output])
                for i, value in got.items():
                    assert np.array_equal(value, want[i]), (name, threads, i)
    finally:
        set_isa(None)


@pytest.mark.parametrize("stem,size", [("cifar", (28, 28)), ("cifar", (32, 32)),
                                       ("imagenet", (64, 48))])
def test_binary_resnet_exports_through_export_model(tmp_path, stem, size):
    torch.manual_seed(3)
    model = _randomize(BinaryResNet(7, 3, 8, (1, 1, 2, 1), scaling="learned", stem=stem,
                                    image_size=size), 3)
    header = export_model(model, tmp_path / "r.engine")
    assert header["format_version"] == fmt.GRAPH_VERSION and header["arch"] == "resnet18"
    engine = load(tmp_path / "r.engine")
    ops = [n.op for n in engine.nodes]
    assert ops.count("bconv2d") == 5 and ops.count("sign") == 5 and "avgpool2d" in ops
    x = torch.randn(8, 3, *size)
    assert _check_nodes(model, engine, x) > 20
    with torch.no_grad():
        assert (engine.predict(x.numpy()) == model(x).argmax(1).numpy()).all()
    _assert_fused_equals_node_by_node(engine, x.numpy())


def test_a_large_batch_runs_in_chunks_of_samples_with_the_same_logits(tmp_path):
    """Chunks keep a block's values in cache; every node but the classifier's BLAS product is
    per sample and exact, so the chunked logits are the whole batch's up to that rounding."""
    model = _randomize(BinaryResNet(7, 3, 8, (1, 1, 1, 1), scaling="learned", stem="imagenet",
                                    image_size=(40, 36)), 4)
    export_model(model, tmp_path / "r.engine")
    engine = load(tmp_path / "r.engine")
    assert engine._chunk >= 16  # a small image: a usual batch is one chunk
    x = np.random.default_rng(3).standard_normal((7, 3, 40, 36)).astype(np.float32)
    whole = engine.run(x)[engine._output].reshape(7, -1)
    engine._chunk = 3  # as if each sample were large
    np.testing.assert_allclose(engine.logits(x), whole, rtol=1e-6, atol=1e-5)
    body = next(i for i, n in enumerate(engine.nodes) if n.op == "global_avgpool")
    for i in range(0, 7, 3):  # the values before the classifier: the same bits
        np.testing.assert_array_equal(engine.run(x[i:i + 3], keep=True)[body],
                                      engine.run(x, keep=True)[body][i:i + 3])
    assert engine.logits(x[:0]).shape == (0, 7) and engine.predict(x[:0]).shape == (0,)

def test_batch_norms_read_only_by_binary_layers_fold_to_thresholds(tmp_path):
    """A BinaryCNN traced as a graph: every hidden layer packs signs, like the chain engine."""
    model = randomize(BinaryCNN(image_size=(12, 12), num_classes=4, fc=(40, 24)), seed=5)
    engine = _export(model, (1, 12, 12), tmp_path / "g.engine")
    modes = [n.params.get("mode") for n in engine.nodes if n.op in ("bconv2d", "bdense")]
    assert modes == ["signs"] * (len(modes) - 1) + ["float"]
    export_model(model, tmp_path / "c.engine")
    chain = load(tmp_path / "c.engine")
    x = np.random.default_rng(0).standard_normal((64, 1, 12, 12)).astype(np.float32)
    _check_nodes(model, engine, torch.from_numpy(x))
    assert (engine.predict(x) == chain.predict(x)).all()
    np.testing.assert_allclose(engine.logits(x), chain.logits(x), rtol=1e-5, atol=1e-4)


# ---- refusals --------------------------------------------------------------------------------
class _Head(nn.Module):
    def __init__(self, middle: nn.Module) -> None:
        super().__init__()
        self.conv = BinaryConv2d(3, 4, 3, padding=1)
        self.middle = middle
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.middle(self.conv(x)), 1))


class _Cat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], 1)[:, :4]


@pytest.mark.parametrize("middle,message", [
    (nn.Tanh(), r"cannot export middle \(Tanh\): the engine graph has no call_module Tanh"),
    (_Cat(), r"cannot export middle \(_Cat\)"),
    (nn.Conv2d(4, 4, 3, padding=1, groups=2), r"cannot export middle \(Conv2d\): groups"),
    (BinaryConv2d(4, 4, 3, padding=1, bias=True), r"cannot export middle.*bias"),
    (nn.AdaptiveAvgPool2d(6), r"cannot export middle \(AdaptiveAvgPool2d\)"),
])
def test_unsupported_modules_are_refused_in_one_line_naming_them(middle, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        graph_header(_Head(middle), (3, 6, 6))
    assert "\n" not in str(info.value)


def test_step_one_resnet_and_float_models_are_refused():
    step1 = BinaryResNet(3, 1, 4, (1, 1), weights="real", image_size=(8, 8))
    with pytest.raises(TypeError, match="BinaryResNet: it has no binary layer"):
        graph_header(step1)
    step1.blocks[1].conv = BinaryConv2d(4, 8, 3, 2, 1)  # one block of step 2, one of step 1
    with pytest.raises(ValueError, match=r"blocks\.0\.conv \(RealWeightConv2d\)"):
        graph_header(step1)
    with pytest.raises(TypeError, match="no binary layer"):
        graph_header(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 8, 8))


# ---- hostile files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """(header, arrays) of a small ReActNet graph."""
    torch.manual_seed(0)
    model = _randomize(Blocks(2, 4, [(8, 2)], "reactnet", "xnor", "cifar"), 0)
    return graph_header(model, (2, 7, 7))


def _node(header: dict, op: str) -> dict:
    return next(n for n in header["graph"]["nodes"] if n["op"] == op)


def _set(op: str, key: str, value) -> object:
    return lambda h, a: _node(h, op).__setitem__(key, value)


def _array(op: str, key: str, fn) -> object:
    return lambda h, a: a.__setitem__(_node(h, op)[key], fn(a[_node(h, op)[key]]))


def _inputs(op: str, value) -> object:
    return lambda h, a: _node(h, op).__setitem__("inputs", value)


def _swap(h: dict, a: dict) -> None:
    nodes = h["graph"]["nodes"]
    nodes[0], nodes[1] = nodes[1], nodes[0]


HOSTILE = {
    "kernel larger than the input": (_set("conv2d", "kernel_size", 40), "does not fit"),
    "stride 0": (_set("avgpool2d", "stride", 0), "stride must be an integer"),
    "padding past half the window": (_set("avgpool2d", "padding", 2), "padding must be"),
    "shortcut of another shape": (_set("avgpool2d", "stride", 1), "shortcut does not match"),
    "NaN scale": (_array("affine", "scale", lambda v: v * np.nan), "non-finite"),
    "infinite alpha": (_array("bconv2d", "alpha", lambda v: v + np.inf), "non-finite"),
    "weights of another shape": (_array("bconv2d", "weights", lambda v: v[:-1]), "expected"),
    "a cycle": (_inputs("sign", ["add"]), "not an earlier node"),
    "a self edge": (_inputs("affine", ["stem.1"]), "not an earlier node"),
    "a dangling edge": (_inputs("prelu", ["nowhere"]), "dangling"),
    "an add of one input": (_inputs("add", ["stem.1"]), "two float inputs"),
    "a node out of order": (_swap, "not an earlier node"),
    "bits read by a float op": (_inputs("prelu", ["blocks.0.shift"]), "reads float, gets bits"),
    "an unknown op": (_set("prelu", "op", "softmax"), "unknown op"),
    "an unknown mode": (_set("bconv2d", "mode", "int8"), "mode must be"),
    "a dead end": (lambda h, a: h["graph"]["nodes"].append(
        {"name": "extra", "op": "global_avgpool", "inputs": ["stem.1"]}),
        "do not reach the output"),
    "an output of bits": (lambda h, a: h["graph"].__setitem__("output", "blocks.0.shift"),
                          "must be float"),
    "an unused array": (lambda h, a: a.__setitem__("spare", np.zeros(2, np.float32)),
                        "arrays no node uses"),
    "two nodes of one name": (_set("prelu", "name", "stem.1"), "used twice"),
    "num_classes of another count": (lambda h, a: h.__setitem__("num_classes", 9),
                                     "num_classes"),
    "a chain's input prep": (lambda h, a: h["input"].__setitem__("prep", "centered"),
                             "reads images"),
    "4097 nodes": (lambda h, a: h["graph"].__setitem__("nodes", h["graph"]["nodes"] * 1000),
                   "1 to 4096 nodes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_graphs_give_one_artifact_error_each(tmp_path, small, case):
    edit, message = HOSTILE[case]
    header, arrays = json.loads(json.dumps(small[0])), dict(small[1])
    edit(header, arrays)
    path = tmp_path / "x.engine"
    path.write_bytes(encode(header, arrays))
    with pytest.raises(ArtifactError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_an_older_hybnn_is_told_to_upgrade(tmp_path, small):
    header = {**small[0], "format_version": fmt.GRAPH_VERSION + 1}
    (tmp_path / "x.engine").write_bytes(encode(header, small[1]))
    with pytest.raises(ArtifactError, match="upgrade hybnn"):
        load(tmp_path / "x.engine")


def test_non_finite_activations_are_a_data_error(tmp_path, small):
    engine = GraphModel(*small, fingerprint="")
    x = np.full((1, 2, 7, 7), np.nan, np.float32)
    with pytest.raises(DataError, match="NaN"):
        engine.logits(x)
    with pytest.raises(DataError, match="shape"):
        engine.logits(np.zeros((1, 2, 7, 8), np.float32))


FUZZ = settings(max_examples=int(__import__("os").environ.get("HYBNN_FUZZ_EXAMPLES", "150")),
                deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_forged_graphs_give_artifact_error_or_a_model_that_runs(tmp_path, small, data):
    """Any field, array or byte edited and re-stamped: one ArtifactError, or a model whose
    outputs have the right shape (or a DataError for NaN activations)."""
    header, arrays = json.loads(json.dumps(small[0])), dict(small[1])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kind = data.draw(st.sampled_from(["header", "header", "arrays", "bytes"]))
    if kind == "header":
        outcome = _edit_header(data.draw, header)
    elif kind == "arrays":
        outcome = _edit_arrays(data.draw, rng, arrays)
    try:
        forged = encode(header, arrays)
    except (ValueError, TypeError):
        event("writer refused")
        return
    if kind == "bytes":
        forged, outcome = _edit_bytes(data.draw, forged)
        forged = restamp(forged)
    path = tmp_path / "forged"
    path.write_bytes(forged)
    try:
        model = load(path)
    except ArtifactError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(f"{outcome}: refused")
        return
    event(f"{outcome}: loaded")
    x = rng.standard_normal((3, *model.input_shape)).astype(np.float32)
    try:
        assert model.logits(x).shape == (3, model.num_classes)
    except DataError:
        event(f"{outcome}: NaN activations")


# ---- real images ------------------------------------------------------------------------------
def trained_resnet() -> tuple[BinaryResNet, Any]:
    """A small binary ResNet trained for one pass over 3,000 Fashion-MNIST images (MNIST 5k
    offline), in eval mode, and the test set."""
    from test_c_export import _real_data

    train, test = _real_data()
    torch.manual_seed(0)
    model = BinaryResNet(10, 1, 16, (1, 1, 1, 1), scaling="learned", image_size=(28, 28))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    x, y = torch.from_numpy(train.x[:3000]), torch.from_numpy(train.y[:3000]).long()
    model.train()
    for i in range(0, len(x), 50):
        loss = F.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), test


@pytest.mark.slow  # trains for half a minute
def test_a_trained_resnet_gives_torchs_classes_on_real_images(tmp_path):
    """A small binary ResNet trained briefly on Fashion-MNIST (MNIST 5k offline): the engine's
    classes equal torch's on at least 99.9 % of 2,000 test images."""
    model, test = trained_resnet()
    export_model(model, tmp_path / "r.engine")
    engine = load(tmp_path / "r.engine")
    xt = np.ascontiguousarray(test.x[:2000])
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(xt)).argmax(1).numpy()
    got = engine.predict(xt)
    assert (got == want).mean() >= 0.999
    assert (want == test.y[:2000]).mean() > 0.5  # it learned something: a real network


def test_hybnn_export_takes_a_binary_resnet_directory(tmp_path, capsys):
    from hybnn.cli import main
    from hybnn.models.io import save_model

    torch.manual_seed(4)
    model = _randomize(BinaryResNet(4, 1, 8, (1, 1), scaling="learned",
                                    image_size=(28, 28)), 4)
    save_model(tmp_path / "resnet", model, task="all")
    assert main(["export", str(tmp_path / "resnet"), "--out", str(tmp_path / "r.engine")]) == 0
    engine = load(tmp_path / "r.engine")
    assert isinstance(engine, GraphModel) and engine.arch == "resnet18"
    assert engine.metadata["source"]["task"] == "all"
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert (engine.predict(x.numpy()) == model(x).argmax(1).numpy()).all()
    out = tmp_path / "c"
    assert main(["export", str(tmp_path / "resnet"), "--out", str(out), "--format", "c"]) == 0
    assert "as C99" in capsys.readouterr().out and (out / "hybnn_model.c").is_file()


def test_the_compiled_epilogue_checks_its_arguments():
    from hybnn.engine.dispatch import _kernels

    n, c, hw = 2, 5, 3
    x = np.zeros(n * c * hw, np.float32)
    ok = np.ones(c, np.float32)
    out = np.empty(n * c * hw, np.float32)
    bits = np.empty(n * hw, np.uint64)
    assert not _kernels.epilogue(x, None, n, c, hw, ((0, ok, ok, None),), out, ok, bits, 1)
    assert (out == 1).all() and (bits == 0).all()
    bad = {
        "short source": (x[:-1], None, n, c, hw, (), out, None, None, 1),
        "short out": (x, None, n, c, hw, (), out[:-1], None, None, 1),
        "int source with no alpha": (x.view(np.int32), None, n, c, hw, (), out, None, None, 1),
        "short alpha": (x.view(np.int32), ok[:-1], n, c, hw, (), out, None, None, 1),
        "add without its tensor": (x, None, n, c, hw, ((1, None, None, None),), out, None,
                                   None, 1),
        "prelu with a tensor": (x, None, n, c, hw, ((3, ok, None, x),), out, None, None, 1),
        "unknown step": (x, None, n, c, hw, ((9, ok, ok, None),), out, None, None, 1),
        "too many steps": (x, None, n, c, hw, ((0, ok, ok, None),) * 17, out, None, None, 1),
        "nothing to write": (x, None, n, c, hw, (), None, None, None, 1),
        "zero channels": (x, None, n, 0, hw, (), out, None, None, 1),
        "short bits": (x, None, n, c, hw, (), None, None, bits[:-1], 1),
    }
    for case, args in bad.items():
        with pytest.raises(ValueError):
            _kernels.epilogue(*args)
            pytest.fail(case)
    x[4] = np.nan
    assert _kernels.epilogue(x, None, n, c, hw, (), None, None, bits, 1)


@pytest.mark.parametrize("n,c,h,w,o,k,s,p", [
    (2, 3, 17, 13, 7, 7, 2, 3),  # an ImageNet stem on odd sides
    (1, 3, 12, 12, 13, 3, 1, 1),  # a CIFAR stem; 13 channels: a partial block of 6
    (3, 5, 9, 11, 8, 1, 1, 0),  # a 1x1 shortcut (read as rows of pixels)
    (2, 4, 8, 8, 5, 1, 2, 0),
    (2, 2, 10, 7, 9, 3, 3, 2),
    (1, 2, 30, 23, 3, 2, 9, 1),  # a stride past the window: only min(s, k) phases stored
])
def test_the_compiled_float_convolution_is_within_float32_rounding_on_every_isa(n, c, h, w, o,
                                                                                 k, s, p):
    """|conv - exact| <= 2 (K + 1) u M, M the convolution of absolute values, K = c k k."""
    from hybnn.engine.dispatch import _kernels

    rng = np.random.default_rng(n * 100 + k)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((o, c, k, k), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)

    def exact(x, wt, b):
        return F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(wt).double(),
                        torch.from_numpy(b).double(), stride=s, padding=p).numpy()

    want, mag = exact(x, wt, b), exact(np.abs(x), np.abs(wt), np.abs(b))
    bound = 2 * (c * k * k + 1) * U * mag
    try:
        for name in available_isas():
            set_isa(name)
            for threads in (1, 3):
                out = np.full(want.shape, np.nan, np.float32)
                _kernels.conv2d(x, wt, b, out, n, c, h, w, o, k, s, p, threads)
                assert (np.abs(out - want) <= bound).all(), (name, threads)
    finally:
        set_isa(None)
    with pytest.raises(ValueError):
        _kernels.conv2d(x, wt, b, out.reshape(-1)[:-1], n, c, h, w, o, k, s, p, 1)
    with pytest.raises(ValueError):
        _kernels.conv2d(x, wt, None, out, n, c, h, w, o, k, s, k, 1)  # padding >= kernel


def test_the_compiled_pooling_matches_torch_on_every_isa():
    """Random windows, strides, paddings, ceil_mode and count_include_pad: max pooling equal
    to torch's (NaN included), average pooling within 2 (k k + 1) u M."""
    from hybnn.engine.dispatch import _kernels
    from hybnn.engine.graph import _pool_size

    rng = np.random.default_rng(5)
    cases = 0
    try:
        for name in available_isas():
            set_isa(name)
            for _ in range(60):
                k, s = int(rng.integers(1, 5)), int(rng.integers(1, 4))
                p = int(rng.integers(0, k // 2 + 1))
                ceil, incl = bool(rng.integers(2)), bool(rng.integers(2))
                c, h, w = (int(v) for v in (rng.integers(1, 4), *rng.integers(k, 12, size=2)))
                ho, wo = _pool_size(h, k, s, p, ceil), _pool_size(w, k, s, p, ceil)
                x = rng.standard_normal((2, c, h, w), dtype=np.float32)
                x[0, 0, 0, int(rng.integers(w))] = np.nan
                t = torch.from_numpy(x)
                for avg in (False, True):
                    out = np.empty((2, c, ho, wo), np.float32)
                    _kernels.pool2d(x, out, 2 * c, h, w, ho, wo, k, s, p, avg, incl,
                                    int(rng.integers(1, 4)))
                    if not avg:
                        want = F.max_pool2d(t, k, s, p, ceil_mode=ceil).numpy()
                        assert np.array_equal(out, want, equal_nan=True)
                        continue
                    exact = F.avg_pool2d(t.double(), k, s, p, ceil, incl).numpy()
                    mag = F.avg_pool2d(t.double().abs(), k, s, p, ceil, incl).numpy()
                    ok = np.isnan(exact) | (np.abs(out - exact) <= 2 * (k * k + 1) * U * mag)
                    assert ok.all() and (np.isnan(out) == np.isnan(exact)).all()
                    cases += 1
    finally:
        set_isa(None)
    assert cases >= 100
    with pytest.raises(ValueError):  # a last window that starts past the input
        _kernels.pool2d(x, np.empty(2 * c * 100, np.float32), 2 * c, h, w, 10, 10, 2, 2, 0,
                        False, False, 1)


def test_the_compiled_pooling_is_the_same_on_every_isa_on_wide_rows():
    """Rows wide enough for the vector blocks of stride 2 (8 windows at a time, the ResNet's
    stem and shortcuts) and their tails: every ISA gives the scalar kernel's bits."""
    from hybnn.engine.dispatch import _kernels
    from hybnn.engine.graph import _pool_size

    rng = np.random.default_rng(6)
    try:
        for _ in range(40):
            k, s = int(rng.integers(1, 5)), int(rng.choice([1, 2, 2, 3]))
            p = int(rng.integers(0, k // 2 + 1))
            ceil, incl = bool(rng.integers(2)), bool(rng.integers(2))
            h, w = int(rng.integers(k, 9)), int(rng.integers(30, 70))
            ho, wo = _pool_size(h, k, s, p, ceil), _pool_size(w, k, s, p, ceil)
            x = rng.standard_normal((3, h, w)).astype(np.float32)
            x[0, int(rng.integers(h)), int(rng.integers(w))] = np.nan
            for avg in (False, True):
                outs = []
                for name in available_isas():  # scalar first
                    set_isa(name)
                    out = np.empty((3, ho, wo), np.float32)
                    _kernels.pool2d(x, out, 3, h, w, ho, wo, k, s, p, avg, incl, 1)
                    outs.append(out)
                assert all(o.tobytes() == outs[0].tobytes() for o in outs), (k, s, p, avg)
    finally:
        set_isa(None)
