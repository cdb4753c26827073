"""Export a PyTorch module built from hybnn's binary layers and supported torch modules to an
engine graph (:mod:`hybnn.engine.graph`), by tracing it with ``torch.fx``.

Supported modules: :class:`BinaryConv2d` and :class:`BinaryLinear` (sign inputs, no bias),
``LearnableBias`` (an RSign threshold when only binary layers read it), ``Conv2d`` (groups 1,
zero padding), ``Linear``, ``BatchNorm1d/2d``, ``PReLU``, ``ReLU``, ``MaxPool2d``,
``AvgPool2d``, ``AdaptiveAvgPool2d(1)``, ``Flatten``, ``Identity`` and ``Dropout``; functions
``+`` / ``torch.add`` and ``flatten(x, 1)``. Modules with children (``Sequential``, blocks,
``RPReLU``) are traced into. Anything else is refused with one line naming the module and
the op.

Folding, each exact: a binary layer's input sign takes the per-channel shift of a
``LearnableBias`` read only by binary layers (``sign(x + b)``); a binary layer followed by a
batch norm read only by binary layers becomes integer thresholds (packed signs out, as a
chain layer, :mod:`hybnn.engine.thresholds`); any other binary layer outputs ``alpha * d``
in float32 and its batch norm is a float ``affine`` node.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import fx, nn

from hybnn.binary.layers import BinaryConv2d, BinaryLayer
from hybnn.engine import format as fmt
from hybnn.engine import graph
from hybnn.engine.export import BIT_ORDER, _alpha, _check_layer, _flip_rows, _negative
from hybnn.engine.packing import pack_sign_words, words_for
from hybnn.engine.thresholds import output_affine, sign_thresholds
from hybnn.models.binary_resnet import LearnableBias

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS = (nn.Identity, nn.Dropout)
_MODULES = (BinaryLayer, LearnableBias, nn.Conv2d, nn.Linear, *_BN, nn.PReLU, nn.ReLU,
            nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, *_PASS)


class _Tracer(fx.Tracer):
    """Stops at every module the exporter maps and at every module without children (an
    unknown one is then refused by its name, not by an op deep inside it)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _MODULES) or not any(True for _ in m.children())


def _square(value: Any, what: str) -> int:
    if isinstance(value, tuple | list):
        if len(set(value)) != 1:
            raise ValueError(f"{what} {tuple(value)} is not square")
        value = value[0]
    if not isinstance(value, int):
        raise ValueError(f"{what} {value!r} is not an integer")
    return value


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().astype(np.float32).copy()


class _GraphBuilder:
    def __init__(self, module: fx.GraphModule, input_shape: tuple[int, int, int]) -> None:
        self.root = module
        self.nodes: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.tensors: dict[str, graph.Tensor] = {"input": graph.Tensor(graph.FLOAT, input_shape)}
        self.value: dict[fx.Node, str] = {}  # fx node -> engine node name (float or bits)
        self.signed: dict[fx.Node, str] = {}  # fx node -> its packed signs
        self.deferred: set[fx.Node] = set()  # biases folded into the sign of their readers

    # ---- emitting -------------------------------------------------------------------
    def emit(self, name: str, op: str, inputs: list[str], params: dict[str, Any] | None = None,
             **arrays: np.ndarray | None) -> str:
        base, k = name, 1
        while name in self.tensors:
            k += 1
            name = f"{base}#{k}"
        i = len(self.nodes)
        spec: dict[str, Any] = {"name": name, "op": op, "inputs": inputs, **(params or {})}
        for key, arr in arrays.items():
            if arr is not None:
                spec[key] = f"nodes.{i}.{key}"
                self.arrays[spec[key]] = arr
        out, *_ = graph._node(spec, [self.tensors[n] for n in inputs], self.arrays)
        self.nodes.append(spec)
        self.tensors[name] = out
        return name

    def module(self, node: fx.Node) -> nn.Module:
        return self.root.get_submodule(str(node.target))

    def float_of(self, node: fx.Node) -> str:
        name = self.value[node]
        if self.tensors[name].kind != graph.FLOAT:
            raise ValueError(f"{node.name}: packed signs are read by a float op")
        return name

    def _is_bits(self, node: fx.Node) -> bool:
        return self.tensors[self.value[node]].kind == graph.BITS

    def bits_of(self, node: fx.Node) -> str:
        """The packed signs of ``node``'s value (a binary layer's input)."""
        if node in self.signed:
            return self.signed[node]
        if node in self.deferred:  # sign(x + b): the bias folds into the sign
            (src,) = node.all_input_nodes
            bias = cast(torch.Tensor, self.module(node).bias).reshape(-1)
            name = self.emit(str(node.target), "sign", [self.float_of(src)], shift=_f32(bias))
        elif self._is_bits(node):
            name = self.value[node]
        else:
            name = self.emit(f"{node.name}.sign", "sign", [self.float_of(node)])
        self.signed[node] = name
        return name

    # ---- modules --------------------------------------------------------------------
    def binary(self, node: fx.Node, layer: BinaryLayer) -> None:
        _check_layer(layer)
        (src,) = node.all_input_nodes
        bits = self.bits_of(src)
        c, h, w = self.tensors[bits].shape
        bn = _sole_user(node, _BN, self.root)
        fold = bn is not None and _users_binary(bn, self.root)
        neg = _negative(layer)
        alpha = _alpha(layer)
        if isinstance(layer, BinaryConv2d):
            neg = neg.transpose(0, 2, 3, 1)  # (O, kh, kw, C)
            kbits = layer.kernel_size**2 * c
            params: dict[str, Any] = {
                "out_channels": layer.out_channels, "kernel_size": layer.kernel_size,
                "stride": layer.stride, "padding": layer.padding}
            op, shape = "bconv2d", neg.shape
        else:
            if layer.in_features != c * h * w:
                raise ValueError(f"{node.target} expects {layer.in_features} inputs, gets "
                                 f"{c * h * w}")
            neg = neg.reshape(-1, c, h, w).transpose(0, 2, 3, 1)  # NCHW flatten -> NHWC
            kbits = c * h * w
            params = {"out_features": layer.out_features}
            op, shape = "bdense", (layer.out_features, h * w * words_for(c))
        if fold:
            assert bn is not None
            thr, flips = sign_thresholds(self.module(bn), alpha, kbits)
            words = pack_sign_words(_flip_rows(neg, flips)).reshape(_words_shape(op, shape, c))
            name = self.emit(str(node.target), op, [bits], {**params, "mode": "signs"},
                             weights=words, thresholds=thr, flips=flips)
            self.value[node] = self.value[bn] = name  # the batch norm is folded in
            return
        a = np.ones(shape[0], np.float32) if alpha is None else _f32(alpha.reshape(-1))
        words = pack_sign_words(neg).reshape(_words_shape(op, shape, c))
        self.value[node] = self.emit(str(node.target), op, [bits], {**params, "mode": "float"},
                                     weights=words, alpha=a)

    def call_module(self, node: fx.Node) -> None:
        m = self.module(node)
        name = str(node.target)
        if isinstance(m, BinaryLayer):
            return self.binary(node, m)
        (src,) = node.all_input_nodes
        if isinstance(m, _BN) and node in self.value:
            return  # folded into the binary layer's thresholds
        if isinstance(m, LearnableBias) and _users_binary(node, self.root, flatten=False):
            self.deferred.add(node)
            return
        if isinstance(m, _PASS) or (isinstance(m, nn.Flatten) and self._is_bits(src)):
            self.value[node] = self.value[src]  # bdense reads bits (C, H, W) as flattened
            return
        x = self.float_of(src)
        c = self.tensors[x].shape[0]
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
                raise ValueError("groups, dilation and padding modes other than zeros")
            params = {"out_channels": m.out_channels,
                      "kernel_size": _square(m.kernel_size, "kernel"),
                      "stride": _square(m.stride, "stride"),
                      "padding": _square(m.padding, "padding")}
            bias = None if m.bias is None else _f32(m.bias)
            self.value[node] = self.emit(name, "conv2d", [x], params, weight=_f32(m.weight),
                                         bias=bias)
        elif isinstance(m, nn.Linear):
            bias = None if m.bias is None else _f32(m.bias)
            self.value[node] = self.emit(name, "dense", [x], {"out_features": m.out_features},
                                         weight=_f32(m.weight), bias=bias)
        elif isinstance(m, _BN):
            _, scale, shift = output_affine(m, None)
            self.value[node] = self.emit(name, "affine", [x], scale=scale, shift=shift)
        elif isinstance(m, LearnableBias):
            self.value[node] = self.emit(name, "affine", [x], scale=np.ones(c, np.float32),
                                         shift=_f32(m.bias.reshape(-1)))
        elif isinstance(m, nn.PReLU | nn.ReLU):
            slope = (np.zeros(c, np.float32) if isinstance(m, nn.ReLU)
                     else np.broadcast_to(_f32(m.weight), (c,)).copy())
            self.value[node] = self.emit(name, "prelu", [x], slope=slope)
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            self.value[node] = self.emit(name, *_pool(m, x))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if _square(m.output_size, "output size") != 1:
                raise ValueError("adaptive pooling to more than 1x1")
            self.value[node] = self.emit(name, "global_avgpool", [x])
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError("flatten other than from dimension 1")
            self.value[node] = self.emit(name, "flatten", [x])
        else:
            raise _Refused(node, f"call_module {type(m).__name__}")
        return None

    def call_function(self, node: fx.Node) -> None:
        fn, args = node.target, node.args
        if fn in (operator.add, torch.add) or (node.op == "call_method" and fn == "add"):
            if len(args) != 2 or node.kwargs or not all(isinstance(a, fx.Node) for a in args):
                raise _Refused(node, f"{_fn_name(fn)} of other than two tensors")
            a, b = (self.float_of(v) for v in args)  # type: ignore[arg-type]
            self.value[node] = self.emit(node.name, "add", [a, b])
        elif fn in (torch.flatten, "flatten"):
            dims = [*args[1:], *node.kwargs.values()]
            if dims not in ([1], [1, -1]):
                raise _Refused(node, f"{_fn_name(fn)}{tuple(dims)} (only flatten(x, 1))")
            (src,) = node.all_input_nodes
            self.value[node] = (self.value[src] if self._is_bits(src) else
                                self.emit(node.name, "flatten", [self.float_of(src)]))
        else:
            raise _Refused(node, f"{node.op} {_fn_name(fn)}")


class _Refused(ValueError):
    def __init__(self, node: fx.Node, what: str) -> None:
        stack = node.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()), None) if stack else None
        where = (f"{owner[0]} ({getattr(owner[1], '__name__', owner[1])})"
                 if isinstance(owner, tuple) else "the model's forward")
        super().__init__(f"cannot export {where}: the engine graph has no {what}")


def _fn_name(fn: Any) -> str:
    return fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))


def _words_shape(op: str, shape: tuple[int, ...], c: int) -> tuple[int, ...]:
    return (*shape[:3], words_for(c)) if op == "bconv2d" else tuple(shape)


def _pool(m: nn.MaxPool2d | nn.AvgPool2d, x: str) -> tuple[str, list[str], dict[str, Any]]:
    k = _square(m.kernel_size, "kernel")
    params = {"kernel_size": k, "stride": _square(m.stride or k, "stride"),
              "padding": _square(m.padding, "padding"), "ceil_mode": bool(m.ceil_mode)}
    if isinstance(m, nn.MaxPool2d):
        if _square(m.dilation, "dilation") != 1 or m.return_indices:
            raise ValueError("max pooling with dilation or indices")
        return "maxpool2d", [x], params
    if m.divisor_override is not None:
        raise ValueError("average pooling with a divisor override")
    return "avgpool2d", [x], {**params, "count_include_pad": bool(m.count_include_pad)}


def _sole_user(node: fx.Node, types: tuple[type, ...], root: nn.Module) -> fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(
            root.get_submodule(str(users[0].target)), types):
        return users[0]
    return None


def _is_flatten(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(root.get_submodule(str(node.target)), nn.Flatten)
    return node.target in (torch.flatten, "flatten")


def _users_binary(node: fx.Node, root: nn.Module, flatten: bool = True) -> bool:
    """Every reader of ``node`` is a binary layer (which takes only its signs), directly or
    (``flatten``) through a flatten."""
    return bool(node.users) and all(
        (u.op == "call_module" and isinstance(root.get_submodule(str(u.target)), BinaryLayer))
        or (flatten and _is_flatten(u, root) and _users_binary(u, root)) for u in node.users)


def build_graph(model: nn.Module, input_shape: Sequence[int]
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(graph, arrays) of ``model`` in eval mode on (C, H, W) images; ValueError names the
    first module or op the engine cannot run."""
    chw = tuple(int(v) for v in input_shape)
    if len(chw) != 3:
        raise ValueError(f"input shape is (C, H, W), got {tuple(input_shape)}")
    try:
        traced = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # tracing runs user code: report it on one line
        raise ValueError(f"cannot trace {type(model).__name__} with torch.fx: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    b = _GraphBuilder(traced, (chw[0], chw[1], chw[2]))
    output: str | None = None
    for node in traced.graph.nodes:
        try:
            if node.op == "placeholder":
                if b.value:
                    raise _Refused(node, "second input")
                b.value[node] = "input"
            elif node.op == "call_module":
                b.call_module(node)
            elif node.op in ("call_function", "call_method"):
                b.call_function(node)
            elif node.op == "output":
                (result,) = node.args
                if not isinstance(result, fx.Node):
                    raise _Refused(node, "output other than one tensor")
                output = b.float_of(result)
            else:
                raise _Refused(node, f"{node.op} {node.target}")
        except _Refused as exc:
            raise ValueError(str(exc).replace("the model's forward",
                                              f"{type(model).__name__}.forward")) from None
        except ValueError as exc:
            what = (f"{node.target} ({type(b.module(node)).__name__})"
                    if node.op == "call_module" else node.name)
            raise ValueError(f"cannot export {what}: {exc}") from None
    assert output is not None
    return {"nodes": b.nodes, "output": output}, b.arrays


def graph_header(model: nn.Module, input_shape: Sequence[int] | None = None,
                 metadata: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(engine header, arrays) of ``model`` as a graph; ``input_shape`` (C, H, W) defaults to
    the model's ``config`` (``in_channels`` and ``image_size``)."""
    from hybnn import __version__

    if not any(isinstance(m, BinaryLayer) for m in model.modules()):
        raise TypeError(f"cannot export a {type(model).__name__}: it has no binary layer "
                        "(the engine runs binary networks)")
    config = getattr(model, "config", None)
    if input_shape is None:
        size = config.get("image_size") if isinstance(config, dict) else None
        if not size:
            raise ValueError(f"{type(model).__name__} records no image size: give input_shape")
        input_shape = (int(config.get("in_channels", 1)), *size)  # type: ignore[union-attr]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            spec, arrays = build_graph(model, input_shape)
    finally:
        model.train(was_training)
    c, h, w = (int(v) for v in input_shape)
    check_header = {"input": {"kind": "image", "channels": c, "height": h, "width": w},
                    "graph": spec}
    _, nodes, _ = graph.check_graph(check_header, arrays)  # the loader's own checks
    out = next(n for n in nodes if n.name == spec["output"])
    header = {
        "kind": fmt.KIND,
        "format_version": fmt.GRAPH_VERSION,
        "hybnn_version": __version__,
        "bit_order": BIT_ORDER,
        "arch": _arch(model),
        "arch_config": config if isinstance(config, dict) else {},
        "num_classes": out.out.shape[0],
        **check_header,
        "metadata": dict(metadata or {}),
    }
    return header, arrays


def _arch(model: nn.Module) -> str:
    from hybnn.models.io import arch_name

    try:
        return arch_name(model)
    except TypeError:
        return type(model).__name__
